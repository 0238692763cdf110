// JSONL dataset loading (text, prompt/completion, chat messages, pre-tokenized), the
// seeded train/eval split and right-padded batches. See dataset.h for the formats.
#include "models/dataset.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/rng.h"
#include "kernels/math/philox.h"

namespace models {

namespace {

using json = nlohmann::json;
using engine::one_line;


std::string excerpt(const json& v) {
  std::string s = v.dump();
  return s.size() <= 40 ? s : s.substr(0, 37) + "...";
}

bool has_target(const std::vector<int32_t>& labels) {
  return std::any_of(labels.begin() + (labels.empty() ? 0 : 1), labels.end(),
                     [](int32_t l) { return l != kIgnoreLabel; });
}

int64_t count_targets(const std::vector<int32_t>& labels) {
  if (labels.empty()) return 0;
  return std::count_if(labels.begin() + 1, labels.end(),
                       [](int32_t l) { return l != kIgnoreLabel; });
}

// Turns one parsed line into an Example; every error names path:line.
class LineReader {
 public:
  LineReader(const std::string& path, int64_t line, const Tokenizer& tokenizer)
      : path_(path), line_(line), tok_(tokenizer) {}

  [[noreturn]] void fail(const std::string& problem) const {
    throw engine::InputError(path_ + ":" + std::to_string(line_) + ": " + one_line(problem, true));
  }

  Example read(const json& obj) const {
    if (!obj.is_object()) fail(std::string("expected a JSON object, got ") + obj.type_name());
    const bool text = obj.contains("text");
    const bool prompt = obj.contains("prompt") || obj.contains("completion");
    const bool messages = obj.contains("messages");
    const bool ids = obj.contains("input_ids");
    const int shapes = int(text) + int(prompt) + int(messages) + int(ids);
    if (shapes == 0) {
      if (obj.contains("labels")) fail("field \"labels\" is only read together with \"input_ids\"");
      fail(
          "expected one of the fields \"text\", \"prompt\" and \"completion\", \"messages\", "
          "\"input_ids\"");
    }
    if (shapes > 1)
      fail(
          "ambiguous example: use only one of \"text\", \"prompt\"/\"completion\", "
          "\"messages\", \"input_ids\"");
    if (obj.contains("labels") && !ids)
      fail("field \"labels\" is only read together with \"input_ids\"");
    if (text) return from_text(obj);
    if (prompt) return from_prompt(obj);
    if (messages) return from_messages(obj);
    return from_ids(obj);
  }

 private:
  [[noreturn]] void wrong_type(const std::string& where, const char* expected,
                               const json& v) const {
    fail("field " + where + " must be " + expected + ", got " + v.type_name() + " " + excerpt(v));
  }

  const std::string& string_field(const json& obj, const std::string& key,
                                  const std::string& where) const {
    auto it = obj.find(key);
    if (it == obj.end()) fail("missing field " + where);
    if (!it->is_string()) wrong_type(where, "a string", *it);
    return it->get_ref<const std::string&>();
  }

  static void append(Example& e, const std::vector<int32_t>& ids, bool trained) {
    e.input_ids.insert(e.input_ids.end(), ids.begin(), ids.end());
    if (trained)
      e.labels.insert(e.labels.end(), ids.begin(), ids.end());
    else
      e.labels.insert(e.labels.end(), ids.size(), kIgnoreLabel);
  }

  // The tokenizer's input errors (a model that has none, say) get this line's place.
  std::vector<int32_t> encode(std::string_view text) const {
    try {
      return tok_.encode(text);
    } catch (const engine::InputError& e) {
      fail(e.what());
    }
  }

  // A special token by name, or its text when the tokenizer has no such token.
  std::vector<int32_t> special(std::string_view name) const {
    if (auto id = tok_.special_token_id(name)) return {*id};
    return encode(name);
  }

  Example from_text(const json& obj) const {
    Example e;
    append(e, {tok_.bos_id()}, true);
    append(e, encode(string_field(obj, "text", "\"text\"")), true);
    append(e, {tok_.eos_id()}, true);
    return e;
  }

  Example from_prompt(const json& obj) const {
    const std::string& p = string_field(obj, "prompt", "\"prompt\"");
    const std::string& c = string_field(obj, "completion", "\"completion\"");
    Example e;
    append(e, {tok_.bos_id()}, false);
    append(e, encode(p), false);
    append(e, encode(c), true);
    append(e, {tok_.eos_id()}, true);
    return e;
  }

  // Llama 3 chat template; each piece is tokenized alone, which keeps the boundaries
  // between header, content and <|eot_id|> exact.
  Example from_messages(const json& obj) const {
    const json& messages = obj.at("messages");
    if (!messages.is_array()) wrong_type("\"messages\"", "an array", messages);
    if (messages.empty()) fail("field \"messages\" is empty");
    Example e;
    append(e, {tok_.bos_id()}, false);
    for (size_t i = 0; i < messages.size(); ++i) {
      const std::string where = "\"messages\"[" + std::to_string(i) + "]";
      const json& m = messages[i];
      if (!m.is_object()) wrong_type(where, "an object", m);
      const std::string& role = string_field(m, "role", where + ".role");
      const std::string& content = string_field(m, "content", where + ".content");
      append(e, special("<|start_header_id|>"), false);
      append(e, encode(role), false);
      append(e, special("<|end_header_id|>"), false);
      append(e, encode("\n\n"), false);
      const bool trained = role == "assistant";
      append(e, encode(content), trained);
      append(e, special("<|eot_id|>"), trained);
    }
    return e;
  }

  // One entry of input_ids or labels: an integer in [0, vocab), or -100 for labels.
  int32_t token(const json& v, const std::string& where, bool allow_ignore) const {
    if (!v.is_number_integer()) wrong_type(where, "an integer", v);
    const int64_t vocab = tok_.vocab_size();
    const bool in_range = v.is_number_unsigned()
                              ? v.get<uint64_t>() < static_cast<uint64_t>(vocab)
                              : v.get<int64_t>() >= 0 && v.get<int64_t>() < vocab;
    if (in_range) return static_cast<int32_t>(v.get<int64_t>());
    if (allow_ignore && v.is_number_integer() && !v.is_number_unsigned() &&
        v.get<int64_t>() == kIgnoreLabel)
      return kIgnoreLabel;
    fail("field " + where + " = " + v.dump() + " is outside the vocabulary [0, " +
         std::to_string(vocab) + ")" + (allow_ignore ? " and is not -100" : ""));
  }

  Example from_ids(const json& obj) const {
    const json& ids = obj.at("input_ids");
    if (!ids.is_array()) wrong_type("\"input_ids\"", "an array", ids);
    if (ids.empty()) fail("field \"input_ids\" is empty");
    Example e;
    e.input_ids.reserve(ids.size());
    for (size_t i = 0; i < ids.size(); ++i)
      e.input_ids.push_back(token(ids[i], "\"input_ids\"[" + std::to_string(i) + "]", false));
    auto it = obj.find("labels");
    if (it == obj.end() || it->is_null()) {
      e.labels = e.input_ids;
      return e;
    }
    if (!it->is_array()) wrong_type("\"labels\"", "an array", *it);
    if (it->size() != ids.size())
      fail("field \"labels\" has " + std::to_string(it->size()) +
           " entries but \"input_ids\" has " + std::to_string(ids.size()));
    e.labels.reserve(ids.size());
    for (size_t i = 0; i < it->size(); ++i)
      e.labels.push_back(token((*it)[i], "\"labels\"[" + std::to_string(i) + "]", true));
    return e;
  }

  const std::string& path_;
  int64_t line_;
  const Tokenizer& tok_;
};

}  // namespace

std::vector<Example> load_jsonl_dataset(const std::string& path, const Tokenizer& tokenizer,
                                        int64_t max_seq_len, DatasetStats* stats_out) {
  if (max_seq_len < 2)
    throw engine::InputError(path + ": max_seq_len must be at least 2 (one input and one target), " +
                             "got " + std::to_string(max_seq_len));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw engine::InputError(path + ": cannot open: " + std::strerror(errno));

  DatasetStats stats;
  std::vector<Example> examples;
  std::string text;
  for (int64_t line = 1; std::getline(in, text); ++line) {
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.find_first_not_of(" \t\r\f\v") == std::string::npos) continue;
    ++stats.records;
    LineReader reader(path, line, tokenizer);
    json obj;
    try {
      obj = json::parse(text);
    } catch (const json::parse_error& e) {
      std::string reason = e.what();
      if (size_t p = reason.find(": "); p != std::string::npos) reason = reason.substr(p + 2);
      reader.fail("invalid JSON at column " + std::to_string(std::max<size_t>(e.byte, 1)) + ": " +
                  reason);
    } catch (const json::exception& e) {  // say, a number beyond a double: 1e400
      std::string reason = e.what();
      if (size_t p = reason.find("] "); p != std::string::npos) reason = reason.substr(p + 2);
      reader.fail("invalid JSON: " + reason);
    }
    Example e = reader.read(obj);
    if (static_cast<int64_t>(e.input_ids.size()) > max_seq_len) {
      e.input_ids.resize(static_cast<size_t>(max_seq_len));
      e.labels.resize(static_cast<size_t>(max_seq_len));
      ++stats.truncated;
    }
    if (!has_target(e.labels)) {
      ++stats.skipped;
      continue;
    }
    stats.tokens += static_cast<int64_t>(e.input_ids.size());
    stats.target_tokens += count_targets(e.labels);
    examples.push_back(std::move(e));
  }
  if (in.bad()) throw engine::InputError(path + ": read error: " + std::strerror(errno));
  stats.examples = static_cast<int64_t>(examples.size());
  if (stats_out) *stats_out = stats;

  if (examples.empty()) {
    if (stats.records == 0)
      throw engine::InputError(path + ": no examples (the file has no records)");
    throw engine::InputError(
        path + ": no usable examples: every record (" + std::to_string(stats.skipped) +
        ") has no trained label after truncation to max_seq_len " + std::to_string(max_seq_len));
  }
  return examples;
}

DatasetSplit split_train_eval(std::vector<Example> examples, double eval_fraction, uint64_t seed) {
  ENGINE_CHECK(std::isfinite(eval_fraction) && eval_fraction >= 0.0 && eval_fraction < 1.0,
               "split_train_eval: eval_fraction must be in [0, 1), got ", eval_fraction);
  const size_t n = examples.size();
  size_t n_eval = 0;
  if (eval_fraction > 0.0) {
    ENGINE_CHECK(n >= 2,
                 "split_train_eval: holding out an eval set needs at least 2 examples, have ", n);
    n_eval = static_cast<size_t>(std::llround(eval_fraction * static_cast<double>(n)));
    n_eval = std::clamp<size_t>(n_eval, 1, n - 1);
  }

  // Fisher-Yates: step i swaps position i with j uniform in [0, i], drawn from counter i.
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  engine::Generator gen(seed);
  const uint64_t base = gen.advance(n);
  for (size_t i = n; i-- > 1;) {
    kmath::Philox4 r = kmath::philox4x32_10(gen.seed(), base + i);
    uint64_t bits = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
    std::swap(order[i], order[bits % (i + 1)]);  // modulo bias <= n / 2^64
  }
  std::vector<bool> is_eval(n, false);
  for (size_t i = 0; i < n_eval; ++i) is_eval[order[i]] = true;

  DatasetSplit split;
  split.eval.reserve(n_eval);
  split.train.reserve(n - n_eval);
  for (size_t i = 0; i < n; ++i)
    (is_eval[i] ? split.eval : split.train).push_back(std::move(examples[i]));
  return split;
}

Batch make_batch(const std::vector<Example>& examples, const std::vector<int64_t>& indices,
                 int64_t pad_id) {
  ENGINE_CHECK(!indices.empty(), "make_batch: no indices");
  ENGINE_CHECK(pad_id >= 0 && pad_id <= std::numeric_limits<int32_t>::max(), "make_batch: pad_id ",
               pad_id, " is not a token id");
  size_t longest = 0;
  for (int64_t i : indices) {
    ENGINE_CHECK(i >= 0 && static_cast<size_t>(i) < examples.size(), "make_batch: index ", i,
                 " outside [0, ", examples.size(), ")");
    const Example& e = examples[static_cast<size_t>(i)];
    ENGINE_CHECK(!e.input_ids.empty() && e.labels.size() == e.input_ids.size(),
                 "make_batch: example ", i, " has ", e.input_ids.size(), " ids and ",
                 e.labels.size(), " labels");
    longest = std::max(longest, e.input_ids.size());
  }
  const size_t rows = indices.size();
  std::vector<int32_t> ids(rows * longest, static_cast<int32_t>(pad_id));
  std::vector<int32_t> labels(rows * longest, kIgnoreLabel);
  Batch batch;
  for (size_t r = 0; r < rows; ++r) {
    const Example& e = examples[static_cast<size_t>(indices[r])];
    std::copy(e.input_ids.begin(), e.input_ids.end(),
              ids.begin() + static_cast<ptrdiff_t>(r * longest));
    std::copy(e.labels.begin(), e.labels.end(),
              labels.begin() + static_cast<ptrdiff_t>(r * longest));
    batch.target_tokens += count_targets(e.labels);
  }
  const engine::Shape shape{static_cast<int64_t>(rows), static_cast<int64_t>(longest)};
  batch.ids = engine::Tensor::from_ints(ids, shape);
  batch.labels = engine::Tensor::from_ints(labels, shape);
  return batch;
}

}  // namespace models
