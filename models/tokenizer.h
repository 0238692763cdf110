// Tokenizer interface (text <-> token ids) and ByteTokenizer, the tokenizer of the
// "tiny" preset: ids 0..255 are the bytes of the UTF-8 text, 256 is <|begin_of_text|>
// (bos) and 257 is <|end_of_text|> (eos), 258 ids in all. The Llama 3 BPE and Llama 2
// SentencePiece tokenizers implement the same interface.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace models {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Plain text to ids; adds no bos/eos, and text that spells a special token (such as
  // "<|eot_id|>") is encoded as ordinary text, never as the special id (a tokenizer.json's
  // non-special added tokens are still matched: the tokenizers package with
  // encode_special_tokens set).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Ids to text; special tokens appear as their names. Throws engine::Error for an id
  // outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  // The id of a special token by name ("<|start_header_id|>"), or nullopt if this
  // tokenizer has no such token (chat templates then spell it as text).
  virtual std::optional<int32_t> special_token_id(std::string_view /*name*/) const {
    return std::nullopt;
  }
  // Hugging Face semantics, as `tokenizer(text, add_special_tokens=...)` in transformers
  // and `Tokenizer.encode` in the tokenizers package: text that spells an added or special
  // token ("<|eot_id|>") becomes that token's id, and add_special_tokens adds what the
  // post-processor adds (Llama 3's template BOS; <s> for SentencePiece). encode() above is
  // the same without either. The default: encode(), after bos_id() when asked.
  virtual std::vector<int32_t> encode_hf(std::string_view text, bool add_special_tokens) const;
};

// Invalid UTF-8 replaced by U+FFFD, one per maximal invalid subpart, as Python's
// bytes.decode("utf-8", "replace") and Rust's String::from_utf8_lossy do. The tokenizers
// encode this text, since the Python packages can only be given text that is valid.
std::string utf8_replace_invalid(std::string_view bytes);
bool utf8_valid(std::string_view bytes);

// The tokenizer of a Hugging Face model directory: tokenizer.json when it is a byte-level
// BPE (Llama 3, GPT-2 style), otherwise tokenizer.model (SentencePiece, Llama 2). bos and
// eos come from the post-processor and tokenizer_config.json. Throws engine::InputError
// naming the file when the directory has neither or one that is not supported.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir);

// Encodes every text using `threads` threads (0: all cores), in order: encode_hf when
// hf_semantics, else encode(). For dataset tokenization; the tokenizers are thread-safe.
std::vector<std::vector<int32_t>> encode_batch(const Tokenizer& tokenizer,
                                               const std::vector<std::string>& texts,
                                               bool hf_semantics, bool add_special_tokens,
                                               int threads = 0);

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kBos = 256;
  static constexpr int32_t kEos = 257;
  static constexpr int64_t kVocab = 258;

  // model_vocab: the vocabulary of the model it serves (a preset or synthetic model's, e.g.
  // 128,256), so that pre-tokenized data may use every id the model has; text still
  // encodes to bytes, and ids above 257 decode as "<|id|>".
  explicit ByteTokenizer(int64_t model_vocab = kVocab) : vocab_(model_vocab > kVocab ? model_vocab : kVocab) {}

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return vocab_; }
  int32_t bos_id() const override { return kBos; }
  int32_t eos_id() const override { return kEos; }
  std::optional<int32_t> special_token_id(std::string_view name) const override;

 private:
  int64_t vocab_;
};

}  // namespace models
