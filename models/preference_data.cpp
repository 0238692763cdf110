#include "models/preference_data.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "models/chat_template.h"
#include "models/jsonl_lines.h"

namespace models {

namespace {

using json = nlohmann::json;

class PairReader {
 public:
  PairReader(const std::string& path, int64_t line, const Tokenizer& tok, const DatasetOptions& o)
      : path_(path), line_(line), tok_(tok), o_(o) {}

  [[noreturn]] void fail(const std::string& field, const std::string& problem) const {
    throw engine::InputError(path_ + ":" + std::to_string(line_) +
                             (field.empty() ? "" : ": field \"" + field + "\"") + ": " +
                             engine::one_line(problem, true));
  }

  PreferencePair read(const json& obj, bool* conversational) const {
    if (!obj.is_object()) fail("", std::string("expected a JSON object, got ") + obj.type_name());
    for (const char* key : {"prompt", "chosen", "rejected"})
      if (!obj.contains(key))
        fail("", std::string("missing field \"") + key +
                     "\" (a preference pair is {\"prompt\", \"chosen\", \"rejected\"})");
    const json& prompt = obj.at("prompt");
    if (prompt.is_string()) {
      *conversational = false;
      std::vector<int32_t> p = encode("prompt", prompt.get<std::string>(), true);
      return {from_strings(p, obj, "chosen"), from_strings(p, obj, "rejected")};
    }
    if (!prompt.is_array())
      fail("prompt", std::string("must be a string or a list of messages, got ") + prompt.type_name());
    *conversational = true;
    const std::vector<ChatMessage> messages = read_messages(prompt, "prompt");
    if (messages.empty()) fail("prompt", "is an empty list");
    return {from_chat(messages, obj, "chosen"), from_chat(messages, obj, "rejected")};
  }

 private:
  std::vector<int32_t> encode(const char* field, const std::string& text, bool special) const {
    try {
      return tok_.encode_hf(text, special);
    } catch (const engine::InputError& e) {
      fail(field, e.what());
    }
  }

  // TRL's string form: prompt ids, then the response without special tokens and EOS.
  Example from_strings(const std::vector<int32_t>& prompt, const json& obj, const char* field) const {
    const json& v = obj.at(field);
    if (!v.is_string())
      fail(field, std::string("must be a string when \"prompt\" is one, got ") + v.type_name());
    Example e;
    e.input_ids = prompt;
    e.labels.assign(prompt.size(), kIgnoreLabel);
    std::vector<int32_t> r = encode(field, v.get<std::string>(), false);
    r.push_back(tok_.eos_id());
    e.input_ids.insert(e.input_ids.end(), r.begin(), r.end());
    e.labels.insert(e.labels.end(), r.begin(), r.end());
    return e;
  }

  std::vector<ChatMessage> read_messages(const json& list, const std::string& field) const {
    std::vector<ChatMessage> out;
    for (size_t i = 0; i < list.size(); ++i) {
      const json& m = list[i];
      const std::string where = field + "[" + std::to_string(i) + "]";
      if (!m.is_object()) fail(where, std::string("must be a message object, got ") + m.type_name());
      for (const char* key : {"role", "content"})
        if (!m.contains(key) || !m.at(key).is_string())
          fail(where, std::string("needs a string \"") + key + "\"");
      out.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
    }
    return out;
  }

  // prompt + response through the chat template; labels only after the prompt rendered
  // with the generation prompt (its longest common prefix with the whole).
  Example from_chat(const std::vector<ChatMessage>& prompt, const json& obj, const char* field) const {
    if (!o_.chat_template)
      fail(field, "a conversational pair needs a chat template: " + o_.chat_template_problem + "; " +
                      kChooseChatTemplate);
    const json& v = obj.at(field);
    std::vector<ChatMessage> response;
    if (v.is_object()) response = read_messages(json::array({v}), field);
    else if (v.is_array()) response = read_messages(v, field);
    else fail(field, std::string("must be a list of messages when \"prompt\" is one, got ") + v.type_name());
    if (response.empty()) fail(field, "is an empty list");
    for (size_t i = 0; i < response.size(); ++i)
      if (response[i].role != "assistant")
        fail(field + std::string("[") + std::to_string(i) + "]",
             "role is \"" + response[i].role + "\"; a response is assistant messages");
    std::vector<ChatMessage> all = prompt;
    all.insert(all.end(), response.begin(), response.end());
    ChatOptions co;
    co.date = o_.date;
    ChatTokens whole, head;
    try {
      whole = tokenize_chat(render_chat(*o_.chat_template, all, co), tok_);
      co.add_generation_prompt = true;
      head = tokenize_chat(render_chat(*o_.chat_template, prompt, co), tok_);
    } catch (const engine::InputError& e) {
      fail(field, std::string(chat_template_name(*o_.chat_template)) + " chat template: " + e.what());
    }
    const auto split = std::mismatch(head.ids.begin(), head.ids.end(), whole.ids.begin(), whole.ids.end());
    const size_t prompt_len = static_cast<size_t>(split.first - head.ids.begin());
    std::fill(whole.labels.begin(), whole.labels.begin() + prompt_len, kIgnoreLabel);
    return Example{std::move(whole.ids), std::move(whole.labels)};
  }

  const std::string& path_;
  int64_t line_;
  const Tokenizer& tok_;
  const DatasetOptions& o_;
};

bool has_target(const Example& e) {
  for (size_t t = 1; t < e.labels.size(); ++t)
    if (e.labels[t] != kIgnoreLabel) return true;
  return false;
}

// Cuts to max_len tokens; true when something was cut.
bool truncate(Example& e, int64_t max_len) {
  if (static_cast<int64_t>(e.input_ids.size()) <= max_len) return false;
  e.input_ids.resize(static_cast<size_t>(max_len));
  e.labels.resize(static_cast<size_t>(max_len));
  return true;
}

}  // namespace

PreferencePair read_preference_record(std::string_view line, const std::string& path,
                                      int64_t line_number, const Tokenizer& tokenizer,
                                      const DatasetOptions& options, bool* conversational) {
  PairReader reader(path, line_number, tokenizer, options);
  json obj = json::parse(line, nullptr, false);
  if (obj.is_discarded()) reader.fail("", "not valid JSON");
  bool conv = false;
  PreferencePair p = reader.read(obj, &conv);
  if (conversational) *conversational = conv;
  return p;
}

std::vector<PreferencePair> load_preference_dataset(const std::string& path, const Tokenizer& tokenizer,
                                                    const DatasetOptions& o, PreferenceStats* stats_out) {
  if (o.max_seq_len < 2)
    throw engine::InputError(path + ": max_seq_len must be at least 2, got " + std::to_string(o.max_seq_len));
  JsonlLineReader reader(path, o.max_line_bytes);
  PreferenceStats stats;
  std::vector<PreferencePair> pairs;
  std::string text;
  for (int64_t line = 0; reader.next(&text, &line);) {
    ++stats.records;
    bool conv = false;
    PreferencePair p = read_preference_record(text, path, line, tokenizer, o, &conv);
    stats.conversational += conv;
    const auto too_long = [&](const Example& e) { return static_cast<int64_t>(e.input_ids.size()) > o.max_seq_len; };
    if (o.truncation == Truncation::Drop && (too_long(p.chosen) || too_long(p.rejected))) {
      ++stats.dropped;
      continue;
    }
    const bool cut_c = truncate(p.chosen, o.max_seq_len), cut_r = truncate(p.rejected, o.max_seq_len);
    stats.truncated += cut_c || cut_r;
    if (!has_target(p.chosen) || !has_target(p.rejected)) {
      ++stats.skipped;
      continue;
    }
    pairs.push_back(std::move(p));
  }
  stats.pairs = static_cast<int64_t>(pairs.size());
  if (pairs.empty())
    throw engine::InputError(path + ": no usable preference pairs (" + std::to_string(stats.records) +
                             " records, " + std::to_string(stats.skipped) +
                             " without a response token within --max-seq-len)");
  if (stats_out) *stats_out = stats;
  return pairs;
}

}  // namespace models
