// Llama chat templates: recognition, rendering into trained/untrained pieces, and
// tokenization with labels. See chat_template.h for the templates.
#include "models/chat_template.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/error.h"

namespace models {

namespace {

// Snippets that pin the rendering implemented here (the Jinja text, where '\n' is
// written as a backslash and an n). A template must contain all of its snippets.
const char* const kLlama3Message =
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>'";
const char* const kLlama31System[] = {
    "{{- bos_token }}", "Cutting Knowledge Date: December 2023\\n",
    "\"Today Date: \" + date_string + \"\\n\\n\"",
    "{%- set system_message = messages[0]['content']|trim %}", "{{- system_message }}"};

bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

// Python's str.isspace() code points (Unicode White_Space plus \x1c-\x1f).
bool py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// The code point at s[i] and its length; invalid UTF-8 reads as one non-space byte.
std::pair<char32_t, size_t> decode_at(std::string_view s, size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return {b, 1};
  const size_t n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
  if (n == 1 || i + n > s.size()) return {0xFFFD, 1};
  char32_t c = b & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    const auto t = static_cast<unsigned char>(s[i + k]);
    if ((t & 0xC0) != 0x80) return {0xFFFD, 1};
    c = (c << 6) | (t & 0x3F);
  }
  return {c, n};
}

class Renderer {
 public:
  explicit Renderer(const ChatOptions& o) : o_(o) {}
  void text(std::string s, bool trained) {
    if (s.empty()) return;
    trained = trained || o_.train_on_inputs;
    if (!pieces_.empty() && pieces_.back().kind == ChatPiece::Text &&
        pieces_.back().trained == trained)
      pieces_.back().text += s;
    else
      pieces_.push_back({ChatPiece::Text, std::move(s), trained});
  }
  void special(ChatPiece::Kind kind, std::string name, bool trained) {
    pieces_.push_back({kind, std::move(name), trained || o_.train_on_inputs});
  }
  std::vector<ChatPiece> take() { return std::move(pieces_); }

 private:
  const ChatOptions& o_;
  std::vector<ChatPiece> pieces_;
};

void check_roles(const std::vector<ChatMessage>& messages) {
  if (messages.empty()) throw engine::InputError("the conversation has no messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r != "system" && r != "user" && r != "assistant")
      throw engine::InputError("message " + std::to_string(i) + " has role \"" + r +
                               "\"; expected system, user or assistant");
  }
}

void render_llama3_message(Renderer& out, const ChatMessage& m) {
  const bool assistant = m.role == "assistant";
  out.special(ChatPiece::Special, "<|start_header_id|>", false);
  out.text(m.role, false);
  out.special(ChatPiece::Special, "<|end_header_id|>", false);
  out.text("\n\n", false);
  out.text(py_strip(m.content), assistant);
  out.special(ChatPiece::Special, "<|eot_id|>", assistant);
}

std::vector<ChatPiece> render_llama3(ChatTemplate t, const std::vector<ChatMessage>& messages,
                                     const ChatOptions& o) {
  Renderer out(o);
  out.special(ChatPiece::Bos, "<|begin_of_text|>", false);
  size_t first = 0;
  if (t != ChatTemplate::Llama3) {
    std::string system;
    if (messages[0].role == "system") {
      system = py_strip(messages[0].content);
      first = 1;
    }
    const std::string date =
        t == ChatTemplate::Llama31 ? "26 Jul 2024" : (o.date.empty() ? today_date_string() : o.date);
    out.special(ChatPiece::Special, "<|start_header_id|>", false);
    out.text("system", false);
    out.special(ChatPiece::Special, "<|end_header_id|>", false);
    out.text("\n\nCutting Knowledge Date: December 2023\nToday Date: " + date + "\n\n" + system,
             false);
    out.special(ChatPiece::Special, "<|eot_id|>", false);
  }
  for (size_t i = first; i < messages.size(); ++i) render_llama3_message(out, messages[i]);
  if (o.add_generation_prompt) {
    out.special(ChatPiece::Special, "<|start_header_id|>", false);
    out.text("assistant", false);
    out.special(ChatPiece::Special, "<|end_header_id|>", false);
    out.text("\n\n", false);
  }
  return out.take();
}

std::vector<ChatPiece> render_llama2(const std::vector<ChatMessage>& messages,
                                     const ChatOptions& o) {
  Renderer out(o);
  size_t first = 0;
  std::optional<std::string> system;
  if (messages[0].role == "system") {
    system = messages[0].content;
    first = 1;
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool user_turn = (i - first) % 2 == 0;
    if ((m.role == "user") != user_turn || m.role == "system")
      throw engine::InputError(
          "llama2 chat: roles must alternate user/assistant/user/... after an optional first "
          "system message; message " + std::to_string(i) + " is " + m.role);
    std::string content = m.content;
    if (i == first && system) content = "<<SYS>>\n" + *system + "\n<</SYS>>\n\n" + content;
    if (user_turn) {
      out.special(ChatPiece::Bos, "<s>", false);
      out.text("[INST] " + py_strip(content) + " [/INST]", false);
    } else {
      std::string reply(" ");  // (not " " + ...: GCC 12 warns falsely on that)
      reply += py_strip(content);
      reply += ' ';
      out.text(std::move(reply), true);
      out.special(ChatPiece::Eos, "</s>", true);
    }
  }
  return out.take();
}

}  // namespace

const char* chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::Llama3: return "llama3";
    case ChatTemplate::Llama31: return "llama3.1";
    case ChatTemplate::Llama32: return "llama3.2";
    case ChatTemplate::Llama2: return "llama2";
  }
  return "?";
}

std::optional<ChatTemplate> parse_chat_template_name(std::string_view name) {
  for (ChatTemplate t : {ChatTemplate::Llama3, ChatTemplate::Llama31, ChatTemplate::Llama32,
                         ChatTemplate::Llama2})
    if (name == chat_template_name(t)) return t;
  if (name == "llama3.3") return ChatTemplate::Llama31;  // the same template
  return std::nullopt;
}

std::optional<ChatTemplate> recognise_chat_template(std::string_view j) {
  if (contains(j, "bos_token + '[INST] ' + content.strip() + ' [/INST]'") &&
      contains(j, "' '  + content.strip() + ' ' + eos_token") &&
      contains(j, "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content']") &&
      contains(j, "{% if messages[0]['role'] == 'system' %}"))
    return ChatTemplate::Llama2;
  if (!contains(j, kLlama3Message)) return std::nullopt;
  const bool preamble = std::all_of(std::begin(kLlama31System), std::end(kLlama31System),
                                    [&](const char* s) { return contains(j, s); });
  if (preamble) {
    if (contains(j, "{%- set date_string = strftime_now(\"%d %b %Y\") %}") &&
        contains(j, "{%- set date_string = \"26 Jul 2024\" %}"))
      return ChatTemplate::Llama32;
    if (!contains(j, "strftime_now") && contains(j, "{%- set date_string = \"26 Jul 2024\" %}"))
      return ChatTemplate::Llama31;
    return std::nullopt;
  }
  if (!contains(j, "Cutting Knowledge") && contains(j, "{% set content = bos_token + content %}") &&
      contains(j, "{% if loop.index0 == 0 %}"))
    return ChatTemplate::Llama3;
  return std::nullopt;
}

ChatTemplateLookup find_chat_template(const std::string& model_dir) {
  namespace fs = std::filesystem;
  ChatTemplateLookup r;
  const fs::path config = fs::path(model_dir) / "tokenizer_config.json";
  const fs::path jinja = fs::path(model_dir) / "chat_template.jinja";
  std::string text, where;
  if (fs::exists(config)) {
    std::ifstream in(config, std::ios::binary);
    nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      r.problem = config.string() + ": not a JSON object";
      return r;
    }
    auto it = j.find("chat_template");
    if (it != j.end() && it->is_string()) {
      text = it->get<std::string>();
      where = config.string();
    } else if (it != j.end() && it->is_array()) {
      for (const auto& e : *it)
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") &&
            e["template"].is_string())
          text = e["template"].get<std::string>();
      where = config.string() + " (\"default\" of chat_template)";
    }
  }
  if (where.empty() && fs::exists(jinja)) {
    std::ifstream in(jinja, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
    where = jinja.string();
  }
  if (where.empty()) {
    r.problem = model_dir + ": no chat_template in tokenizer_config.json (nor chat_template.jinja)";
    return r;
  }
  r.kind = recognise_chat_template(text);
  if (!r.kind) r.problem = where + ": the chat_template is not one train70b knows";
  return r;
}

std::vector<ChatPiece> render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages,
                                   const ChatOptions& options) {
  check_roles(messages);
  if (t == ChatTemplate::Llama2) return render_llama2(messages, options);
  return render_llama3(t, messages, options);
}

std::string chat_text(ChatTemplate, const std::vector<ChatPiece>& pieces) {
  std::string s;
  for (const ChatPiece& p : pieces) s += p.text;
  return s;
}

ChatTokens tokenize_chat(const std::vector<ChatPiece>& pieces, const Tokenizer& tok) {
  ChatTokens out;
  auto push = [&](const std::vector<int32_t>& ids, size_t begin, size_t end, bool trained) {
    for (size_t i = begin; i < end; ++i) {
      out.ids.push_back(ids[i]);
      out.labels.push_back(trained ? ids[i] : -100);
    }
  };
  for (size_t i = 0; i < pieces.size();) {
    const ChatPiece& p = pieces[i];
    if (p.kind != ChatPiece::Text) {
      std::optional<int32_t> id;
      if (p.kind == ChatPiece::Bos) id = tok.bos_id();
      if (p.kind == ChatPiece::Eos) id = tok.eos_id();
      if (p.kind == ChatPiece::Special) id = tok.special_token_id(p.text);
      if (id) {
        push({*id}, 0, 1, p.trained);
      } else {  // a tokenizer without this special token spells it
        const std::vector<int32_t> ids = tok.encode_hf(p.text, false);
        push(ids, 0, ids.size(), p.trained);
      }
      ++i;
      continue;
    }
    // A run of text pieces between special tokens: encoded whole; each boundary between
    // pieces falls after the longest prefix the run's ids share with the encoding of the
    // text before it.
    size_t end = i;
    std::string run;
    std::vector<size_t> bounds;  // character offsets where pieces i+1.. begin
    while (end < pieces.size() && pieces[end].kind == ChatPiece::Text) {
      if (end > i) bounds.push_back(run.size());
      run += pieces[end].text;
      ++end;
    }
    const std::vector<int32_t> ids = tok.encode_hf(run, false);
    size_t from = 0;
    for (size_t k = 0; k < bounds.size(); ++k) {
      const std::vector<int32_t> prefix = tok.encode_hf(std::string_view(run).substr(0, bounds[k]), false);
      size_t common = 0;
      while (common < prefix.size() && common < ids.size() && prefix[common] == ids[common]) ++common;
      // A straddling token belongs to the later piece when that one is trained.
      size_t cut = std::max(from, common);
      push(ids, from, cut, pieces[i + k].trained);
      from = cut;
    }
    push(ids, from, ids.size(), pieces[end - 1].trained);
    i = end;
  }
  return out;
}

std::string py_strip(std::string_view s) {
  size_t begin = 0, end = s.size();
  while (begin < end) {
    auto [c, n] = decode_at(s, begin);
    if (!py_space(c)) break;
    begin += n;
  }
  // Scan forwards for the last non-space code point (UTF-8 cannot be read backwards
  // safely when it may be invalid).
  size_t last_end = begin;
  for (size_t i = begin; i < end;) {
    auto [c, n] = decode_at(s, i);
    i += n;
    if (!py_space(c)) last_end = i;
  }
  return std::string(s.substr(begin, last_end - begin));
}

std::string today_date_string() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  char buf[32];
  if (now == static_cast<std::time_t>(-1) || !localtime_r(&now, &tm) ||
      std::strftime(buf, sizeof buf, "%d %b %Y", &tm) == 0)
    return "26 Jul 2024";
  return buf;
}

}  // namespace models
