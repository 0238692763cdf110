// ByteTokenizer: UTF-8 bytes as ids, plus <|begin_of_text|> and <|end_of_text|>.
#include "models/tokenizer.h"

#include "engine/error.h"

namespace models {

namespace {
constexpr std::string_view kBosName = "<|begin_of_text|>";
constexpr std::string_view kEosName = "<|end_of_text|>";
}  // namespace

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (char c : text) ids.push_back(static_cast<int32_t>(static_cast<unsigned char>(c)));
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int32_t id : ids) {
    if (id == kBos)
      text += kBosName;
    else if (id == kEos)
      text += kEosName;
    else if (id >= 0 && id < 256)
      text += static_cast<char>(static_cast<unsigned char>(id));
    else
      throw engine::Error("ByteTokenizer::decode: token id " + std::to_string(id) +
                          " is outside [0, " + std::to_string(kVocab) + ")");
  }
  return text;
}

std::optional<int32_t> ByteTokenizer::special_token_id(std::string_view name) const {
  if (name == kBosName) return kBos;
  if (name == kEosName) return kEos;
  return std::nullopt;
}

}  // namespace models
