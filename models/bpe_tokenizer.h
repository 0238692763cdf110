// Byte-level BPE from a Hugging Face tokenizer.json (Llama 3, GPT-2 style), producing the
// ids of the `tokenizers` package for the same file and text.
//
// The pipeline, as the package runs it:
//   1. added tokens: the text is cut at every added token (leftmost, then longest match;
//      first those with normalized false, then the others); each becomes its id. Special
//      ones only in encode_hf(); encode() encodes their text as text.
//   2. pre-tokenizer stages on each remaining piece: Split (a regex run by PCRE2 with JIT,
//      UTF and Unicode properties; behaviour Isolated or Removed), then ByteLevel (an
//      optional prefix space, the optional GPT-2 regex, and the byte-to-unicode map).
//   3. BPE on each piece's bytes: with ignore_merges, a piece that is itself in the vocab
//      is that token; otherwise the lowest-ranked adjacent pair is merged, leftmost first,
//      until no merge applies.
//   4. the post-processor's TemplateProcessing tokens around the sequence (encode_hf with
//      add_special_tokens).
// Decoding maps the tokens' characters back to bytes (an added token with a character
// outside the map keeps its UTF-8) and replaces invalid UTF-8 by U+FFFD.
// Working on raw bytes instead of the mapped characters: the map is a bijection of bytes
// to characters, so the vocab is converted once at load.
#pragma once
#include <memory>
#include <string>

#include "models/tokenizer.h"

namespace models {

class BpeTokenizer final : public Tokenizer {
 public:
  // `json_path` is tokenizer.json; `config_path` tokenizer_config.json (may not exist),
  // for bos/eos when the post-processor does not name them. Throws engine::InputError
  // naming the file for what is malformed or not supported.
  BpeTokenizer(const std::string& json_path, const std::string& config_path);
  ~BpeTokenizer() override;

  // nullptr when tokenizer.json is not a byte-level BPE (its pre-tokenizer has no
  // ByteLevel: SentencePiece-style BPE such as Llama 2's); otherwise as the constructor.
  static std::unique_ptr<BpeTokenizer> load_if_byte_level(const std::string& json_path,
                                                          const std::string& config_path);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::vector<int32_t> encode_hf(std::string_view text, bool add_special_tokens) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;
  std::optional<int32_t> special_token_id(std::string_view name) const override;

  struct Impl;

 private:
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace models
