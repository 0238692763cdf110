// SentencePieceTokenizer: a thin layer over sentencepiece::SentencePieceProcessor.
#include "models/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>

#include "engine/error.h"

namespace models {

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()), path_(model_path) {
  const auto status = sp_->Load(model_path);
  ENGINE_INPUT_CHECK(status.ok(), model_path, ": not a SentencePiece model (",
                     engine::one_line(status.ToString()), ")");
  ENGINE_INPUT_CHECK(sp_->bos_id() >= 0 && sp_->eos_id() >= 0, model_path,
                     ": the model has no bos or eos piece");
  for (int id = 0; id < sp_->GetPieceSize(); ++id)
    if (sp_->IsControl(id) || sp_->IsUnknown(id))
      specials_.emplace_back(sp_->IdToPiece(id), id);
  std::stable_sort(specials_.begin(), specials_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const std::string clean = utf8_valid(text) ? std::string(text) : utf8_replace_invalid(text);
  const auto status = sp_->Encode(clean, &ids);
  ENGINE_CHECK(status.ok(), "SentencePiece encode: ", status.ToString());
  return {ids.begin(), ids.end()};
}

std::vector<int32_t> SentencePieceTokenizer::encode_hf(std::string_view text,
                                                       bool add_special_tokens) const {
  std::vector<int32_t> ids;
  if (add_special_tokens) ids.push_back(bos_id());
  size_t pos = 0, gap = 0;
  auto flush = [&](size_t end) {
    if (end > gap) {
      const std::vector<int32_t> part = encode(text.substr(gap, end - gap));
      ids.insert(ids.end(), part.begin(), part.end());
    }
  };
  while (pos < text.size()) {
    const auto hit = std::find_if(specials_.begin(), specials_.end(), [&](const auto& s) {
      return !s.first.empty() && text.compare(pos, s.first.size(), s.first) == 0;
    });
    if (hit == specials_.end()) {
      ++pos;
      continue;
    }
    flush(pos);
    ids.push_back(hit->second);
    pos += hit->first.size();
    gap = pos;
  }
  flush(text.size());
  return ids;
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  for (int32_t id : ids)
    if (id < 0 || id >= vocab_size())
      throw engine::Error("SentencePieceTokenizer::decode: token id " + std::to_string(id) +
                          " is outside [0, " + std::to_string(vocab_size()) + ")");
  std::string text;
  const auto status = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  ENGINE_CHECK(status.ok(), "SentencePiece decode: ", status.ToString());
  return text;
}

int64_t SentencePieceTokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int32_t SentencePieceTokenizer::bos_id() const { return sp_->bos_id(); }
int32_t SentencePieceTokenizer::eos_id() const { return sp_->eos_id(); }

std::optional<int32_t> SentencePieceTokenizer::special_token_id(std::string_view name) const {
  for (const auto& [piece, id] : specials_)
    if (piece == name) return id;
  return std::nullopt;
}

}  // namespace models
