// load_tokenizer: the tokenizer of a Hugging Face model directory.
#include <filesystem>

#include "engine/error.h"
#include "models/bpe_tokenizer.h"
#include "models/sentencepiece_tokenizer.h"
#include "models/tokenizer.h"

namespace models {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const fs::path dir(model_dir);
  const std::string json_path = (dir / "tokenizer.json").string();
  const std::string sp_path = (dir / "tokenizer.model").string();
  const bool has_sp = fs::exists(sp_path);
  if (fs::exists(json_path)) {
    // A tokenizer.json that is not byte-level (Llama 2's) is read from tokenizer.model.
    if (has_sp) {
      try {
        if (auto t = BpeTokenizer::load_if_byte_level(json_path, (dir / "tokenizer_config.json").string()))
          return t;
      } catch (const engine::InputError&) {
        // unsupported parts of tokenizer.json: tokenizer.model describes the same tokenizer
      }
      return std::make_unique<SentencePieceTokenizer>(sp_path);
    }
    if (auto t = BpeTokenizer::load_if_byte_level(json_path, (dir / "tokenizer_config.json").string()))
      return t;
    throw engine::InputError(json_path +
                             ": not a byte-level BPE, and there is no tokenizer.model beside it");
  }
  if (has_sp) return std::make_unique<SentencePieceTokenizer>(sp_path);
  throw engine::InputError(model_dir + ": no tokenizer.json or tokenizer.model");
}

}  // namespace models
