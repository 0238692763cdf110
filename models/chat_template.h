// Chat templates of Meta's Llama models, rendered exactly as transformers'
// apply_chat_template renders the chat_template of each model's tokenizer_config.json
// (tests/data/chat_templates/, checked against transformers by
// tests/data/make_chat_template_reference.py), for system, user and assistant messages:
//
//   llama3    Meta-Llama-3-*-Instruct: bos, then per message
//             <|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>
//   llama3.1  Llama-3.1/3.3-*-Instruct: bos, then always a system block
//             "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" + the first
//             message's content when it is a system message (trimmed, else empty), then the
//             other messages as llama3
//   llama3.2  Llama-3.2-1B/3B-Instruct: as llama3.1, with today's date (strftime "%d %b %Y",
//             as transformers' strftime_now) on the Today Date line; "26 Jul 2024" is the
//             template's own fallback, used when the clock cannot be read
//   llama2    Llama-2-*-chat-hf: per user turn "<s>[INST] {user} [/INST]" (the first with
//             "<<SYS>>\n{system}\n<</SYS>>\n\n" before the user text), per assistant turn
//             " {assistant} </s>"; roles must alternate user/assistant after an optional system
//
// trim and strip remove Python's Unicode whitespace (str.strip). BOS comes from the
// template only (once; for llama2 once per user turn, as the template writes it): the
// tokens are the rendered text encoded with add_special_tokens=False, as
// apply_chat_template(tokenize=True) does.
//
// Trained spans (labels != -100): each assistant message's content and the token that
// closes it (<|eot_id|>; for llama2 " {content} </s>"); everything with train_on_inputs.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "models/tokenizer.h"

namespace models {

enum class ChatTemplate { Llama3, Llama31, Llama32, Llama2 };

// "llama3", "llama3.1", "llama3.2", "llama2".
const char* chat_template_name(ChatTemplate t);
std::optional<ChatTemplate> parse_chat_template_name(std::string_view name);
// What an unknown or missing template's error ends with.
inline constexpr const char* kChooseChatTemplate =
    "choose one with --chat-template llama3|llama3.1|llama3.2|llama2";

// Recognises a chat_template (Jinja text) as one of the above, or nullopt.
std::optional<ChatTemplate> recognise_chat_template(std::string_view jinja);

// The template of a model directory: tokenizer_config.json's "chat_template" (a string,
// or a list of {name, template} whose "default" counts), else chat_template.jinja.
// `problem` says why there is none (no file, no template, an unknown one), naming the file.
struct ChatTemplateLookup {
  std::optional<ChatTemplate> kind;
  std::string problem;
};
ChatTemplateLookup find_chat_template(const std::string& model_dir);

struct ChatMessage {
  std::string role;  // system, user or assistant
  std::string content;
};

struct ChatOptions {
  bool train_on_inputs = false;
  bool add_generation_prompt = false;
  std::string date;  // llama3.2's Today Date; empty: today
};

// One piece of the rendered conversation: text, or a special token (bos, eos, or one the
// template names, such as <|eot_id|>), trained or not.
struct ChatPiece {
  enum Kind { Text, Bos, Eos, Special } kind = Text;
  std::string text;  // the text, or the special token's name
  bool trained = false;
};

// Throws engine::InputError (no place: the caller adds the file and line) for messages
// the template refuses: no messages, an unknown role, llama2 roles out of turn.
std::vector<ChatPiece> render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages,
                                   const ChatOptions& options);

// The rendered text, as apply_chat_template(tokenize=False) gives it.
std::string chat_text(ChatTemplate t, const std::vector<ChatPiece>& pieces);

// Token ids (as apply_chat_template(tokenize=True)) and aligned labels (-100 outside the
// trained spans). Text between special tokens is encoded whole with encode_hf, so the ids
// are the tokenizer's for the whole run; a token that straddles a boundary between pieces
// goes with the later piece.
struct ChatTokens {
  std::vector<int32_t> ids, labels;
};
ChatTokens tokenize_chat(const std::vector<ChatPiece>& pieces, const Tokenizer& tokenizer);

// Python's str.strip(): leading and trailing Unicode whitespace removed.
std::string py_strip(std::string_view s);
// "%d %b %Y" of the local date now (C locale), or "26 Jul 2024" when it cannot be read.
std::string today_date_string();

}  // namespace models
