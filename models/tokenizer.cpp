// ByteTokenizer: UTF-8 bytes as ids, plus <|begin_of_text|> and <|end_of_text|>.
#include "models/tokenizer.h"

#include <algorithm>
#include <exception>
#include <thread>

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
    else if (id > kEos && id < vocab_)  // a model id with no byte: pre-tokenized data
      text += "<|" + std::to_string(id) + "|>";
    else
      throw engine::Error("ByteTokenizer::decode: token id " + std::to_string(id) +
                          " is outside [0, " + std::to_string(vocab_) + ")");
  }
  return text;
}

std::optional<int32_t> ByteTokenizer::special_token_id(std::string_view name) const {
  if (name == kBosName) return kBos;
  if (name == kEosName) return kEos;
  return std::nullopt;
}

std::vector<int32_t> Tokenizer::encode_hf(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> ids;
  if (add_special_tokens) ids.push_back(bos_id());
  const std::vector<int32_t> body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

namespace {
// The length of the well-formed UTF-8 sequence at s[i] (Unicode Table 3-7), or, when it is
// ill-formed, minus the length of its maximal subpart (at least 1).
int utf8_sequence(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  int n;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return -1;
  }
  for (int k = 1; k < n; ++k) {
    if (i + k >= s.size()) return -k;
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return -k;
  }
  return n;
}
}  // namespace

bool utf8_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const int n = utf8_sequence(s, i);
    if (n < 0) return false;
    i += n;
  }
  return true;
}

std::string utf8_replace_invalid(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size();) {
    const int n = utf8_sequence(s, i);
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      i += -n;
    }
  }
  return out;
}

std::vector<std::vector<int32_t>> encode_batch(const Tokenizer& tokenizer,
                                               const std::vector<std::string>& texts,
                                               bool hf_semantics, bool add_special_tokens,
                                               int threads) {
  std::vector<std::vector<int32_t>> out(texts.size());
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = static_cast<int>(std::min<size_t>(threads, std::max<size_t>(1, texts.size() / 16)));
  auto work = [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i)
      out[i] = hf_semantics ? tokenizer.encode_hf(texts[i], add_special_tokens)
                            : tokenizer.encode(texts[i]);
  };
  if (threads <= 1) {
    work(0, texts.size());
    return out;
  }
  // Interleaved chunks, so that long texts spread over the threads; errors are rethrown
  // in order (the first failing chunk's).
  constexpr size_t kChunk = 64;
  const size_t chunks = (texts.size() + kChunk - 1) / kChunk;
  std::vector<std::exception_ptr> errors(chunks);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (size_t c = t; c < chunks; c += threads) {
        try {
          work(c * kChunk, std::min(texts.size(), (c + 1) * kChunk));
        } catch (...) {
          errors[c] = std::current_exception();
        }
      }
    });
  }
  for (std::thread& th : pool) th.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

}  // namespace models
