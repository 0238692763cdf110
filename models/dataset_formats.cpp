// JSONL record formats (see dataset.h): text, prompt/completion, chat messages, ShareGPT,
// Alpaca, pre-tokenized.
#include "models/dataset_formats.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "models/chat_template.h"

namespace models {

namespace {

using json = nlohmann::json;
using engine::one_line;

std::string excerpt(const json& v) {
  std::string s = v.dump();
  return s.size() <= 40 ? s : s.substr(0, 37) + "...";
}

bool blank(const std::string& s) { return py_strip(s).empty(); }

// Turns one parsed line into an Example; every error names path:line.
class LineReader {
 public:
  LineReader(const std::string& path, int64_t line, const Tokenizer& tokenizer,
             const DatasetOptions& options)
      : path_(path), line_(line), tok_(tokenizer), o_(options) {}

  [[noreturn]] void fail(const std::string& problem) const {
    throw engine::InputError(path_ + ":" + std::to_string(line_) + ": " + one_line(problem, true));
  }

  Record read(const json& obj) const {
    if (!obj.is_object()) fail(std::string("expected a JSON object, got ") + obj.type_name());
    const bool text = obj.contains("text");
    const bool prompt = obj.contains("prompt") || obj.contains("completion");
    const bool messages = obj.contains("messages");
    const bool sharegpt = obj.contains("conversations");
    const bool alpaca = obj.contains("instruction") || obj.contains("output");
    const bool ids = obj.contains("input_ids");
    const int shapes = int(text) + int(prompt) + int(messages) + int(sharegpt) + int(alpaca) + int(ids);
    if (shapes == 0) {
      if (obj.contains("labels")) fail("field \"labels\" is only read together with \"input_ids\"");
      fail(
          "expected one of the fields \"text\", \"prompt\" and \"completion\", \"messages\", "
          "\"conversations\", \"instruction\" and \"output\", \"input_ids\"");
    }
    if (shapes > 1)
      fail(
          "ambiguous example: use only one of \"text\", \"prompt\"/\"completion\", "
          "\"messages\", \"conversations\", \"instruction\"/\"output\", \"input_ids\"");
    if (obj.contains("labels") && !ids)
      fail("field \"labels\" is only read together with \"input_ids\"");
    Record r;
    if (text) {
      r.format = RecordFormat::Text;
      r.example = from_text(obj);
    } else if (prompt) {
      r.format = RecordFormat::PromptCompletion;
      r.example = from_prompt(obj, &r.empty_response);
    } else if (messages) {
      r.format = RecordFormat::Messages;
      r.example = chat(from_messages(obj), &r.empty_response);
    } else if (sharegpt) {
      r.format = RecordFormat::ShareGPT;
      r.example = chat(from_sharegpt(obj), &r.empty_response);
    } else if (alpaca) {
      r.format = RecordFormat::Alpaca;
      r.example = chat(from_alpaca(obj), &r.empty_response);
    } else {
      r.format = RecordFormat::Pretokenized;
      r.example = from_ids(obj);
    }
    return r;
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

  Example from_text(const json& obj) const {
    Example e;
    append(e, {tok_.bos_id()}, true);
    append(e, encode(string_field(obj, "text", "\"text\"")), true);
    append(e, {tok_.eos_id()}, true);
    return e;
  }

  Example from_prompt(const json& obj, bool* empty) const {
    const std::string& p = string_field(obj, "prompt", "\"prompt\"");
    const std::string& c = string_field(obj, "completion", "\"completion\"");
    *empty = blank(c);
    const bool all = o_.train_on_inputs;
    Example e;
    append(e, {tok_.bos_id()}, all);
    append(e, encode(p), all);
    append(e, encode(c), true);
    append(e, {tok_.eos_id()}, true);
    return e;
  }

  std::vector<ChatMessage> from_messages(const json& obj) const {
    const json& messages = obj.at("messages");
    if (!messages.is_array()) wrong_type("\"messages\"", "an array", messages);
    if (messages.empty()) fail("field \"messages\" is empty");
    std::vector<ChatMessage> out;
    for (size_t i = 0; i < messages.size(); ++i) {
      const std::string where = "\"messages\"[" + std::to_string(i) + "]";
      const json& m = messages[i];
      if (!m.is_object()) wrong_type(where, "an object", m);
      out.push_back({string_field(m, "role", where + ".role"),
                     string_field(m, "content", where + ".content")});
    }
    return out;
  }

  std::vector<ChatMessage> from_sharegpt(const json& obj) const {
    const json& turns = obj.at("conversations");
    if (!turns.is_array()) wrong_type("\"conversations\"", "an array", turns);
    if (turns.empty()) fail("field \"conversations\" is empty");
    std::vector<ChatMessage> out;
    for (size_t i = 0; i < turns.size(); ++i) {
      const std::string where = "\"conversations\"[" + std::to_string(i) + "]";
      const json& m = turns[i];
      if (!m.is_object()) wrong_type(where, "an object", m);
      const std::string& from = string_field(m, "from", where + ".from");
      std::string role;
      if (from == "system") role = "system";
      else if (from == "human" || from == "user") role = "user";
      else if (from == "gpt" || from == "assistant") role = "assistant";
      else fail("field " + where + ".from is \"" + from + "\"; expected system, human, user, gpt or assistant");
      out.push_back({role, string_field(m, "value", where + ".value")});
    }
    return out;
  }

  std::vector<ChatMessage> from_alpaca(const json& obj) const {
    std::string user = string_field(obj, "instruction", "\"instruction\"");
    if (auto it = obj.find("input"); it != obj.end() && !it->is_null()) {
      if (!it->is_string()) wrong_type("\"input\"", "a string", *it);
      if (!it->get_ref<const std::string&>().empty()) user += "\n\n" + it->get<std::string>();
    }
    return {{"user", user}, {"assistant", string_field(obj, "output", "\"output\"")}};
  }

  Example chat(const std::vector<ChatMessage>& messages, bool* empty) const {
    if (!o_.chat_template)
      fail("this record needs a chat template: " + o_.chat_template_problem + "; " + kChooseChatTemplate);
    *empty = std::any_of(messages.begin(), messages.end(), [](const ChatMessage& m) {
      return m.role == "assistant" && blank(m.content);
    });
    ChatOptions co;
    co.train_on_inputs = o_.train_on_inputs;
    co.date = o_.date;
    try {
      ChatTokens t = tokenize_chat(render_chat(*o_.chat_template, messages, co), tok_);
      return Example{std::move(t.ids), std::move(t.labels)};
    } catch (const engine::InputError& e) {
      fail(std::string(chat_template_name(*o_.chat_template)) + " chat template: " + e.what());
    }
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
  const DatasetOptions& o_;
};

}  // namespace

Record read_record(std::string_view line, const std::string& path, int64_t line_number,
                   const Tokenizer& tokenizer, const DatasetOptions& options) {
  LineReader reader(path, line_number, tokenizer, options);
  json obj;
  try {
    obj = json::parse(line);
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
  return reader.read(obj);
}

}  // namespace models
