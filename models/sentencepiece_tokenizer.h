// SentencePiece (tokenizer.model: Llama 2's BPE with byte fallback, or any unigram/BPE
// model) through Debian's libsentencepiece; ids identical to the `sentencepiece` package.
//   encode(text)     sp.encode(text): no bos/eos, "<s>" in the text is text.
//   encode_hf(text)  the text cut at the spelling of each control piece ("<s>", "</s>")
//                    and of the unknown piece, each part encoded alone with its dummy
//                    prefix (as Llama 2's tokenizer.json, whose Prepend("▁") normalizer
//                    runs on each piece between special tokens; not compared against
//                    transformers by the tests), and bos first when add_special_tokens
//                    (Llama 2 adds no eos).
// Invalid UTF-8 is replaced first (utf8_replace_invalid), as the Python package is given
// bytes.decode("utf-8", "replace"). The processor is only read after loading, so encode
// and decode may run on several threads.
#pragma once
#include <memory>
#include <string>
#include <utility>

#include "models/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace models {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Throws engine::InputError naming `model_path` when it cannot be read as a model.
  explicit SentencePieceTokenizer(const std::string& model_path);
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> encode(std::string_view text) const override;
  std::vector<int32_t> encode_hf(std::string_view text, bool add_special_tokens) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;
  // Control pieces ("<s>", "</s>") and the unknown piece, by name.
  std::optional<int32_t> special_token_id(std::string_view name) const override;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::vector<std::pair<std::string, int32_t>> specials_;  // longest first
  std::string path_;
};

}  // namespace models
