// Tokenizer interface (text <-> token ids) and ByteTokenizer, the tokenizer of the
// "tiny" preset: ids 0..255 are the bytes of the UTF-8 text, 256 is <|begin_of_text|>
// (bos) and 257 is <|end_of_text|> (eos), 258 ids in all. The Llama 3 BPE and Llama 2
// SentencePiece tokenizers implement the same interface.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace models {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Plain text to ids; adds no bos/eos, and text that spells a special token (such as
  // "<|eot_id|>") is encoded as ordinary text, never as the special id.
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
};

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kBos = 256;
  static constexpr int32_t kEos = 257;
  static constexpr int64_t kVocab = 258;

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return kVocab; }
  int32_t bos_id() const override { return kBos; }
  int32_t eos_id() const override { return kEos; }
  std::optional<int32_t> special_token_id(std::string_view name) const override;
};

}  // namespace models
