// `train70b tokenize`: blocks of lines are encoded on all cores, written in input order.
#include "tools/train/tokenize.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "models/chat_template.h"
#include "models/dataset_formats.h"
#include "models/tokenizer.h"
#include "tools/train/cli.h"

namespace train {

namespace {
constexpr size_t kBlockLines = 8192;  // lines encoded together (memory stays bounded)
}

namespace {

std::string id_list(const std::vector<int32_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(v[i]);
  }
  return s + "]";
}

// --chat: each record through models::read_record (the chat template, labels).
void tokenize_chat_jsonl(const TokenizeOptions& o, const models::Tokenizer& tok, std::istream& in,
                         const std::string& in_name, std::ostream& out) {
  models::DatasetOptions d;
  d.train_on_inputs = o.train_on_inputs;
  if (!o.chat_template.empty()) {
    d.chat_template = models::parse_chat_template_name(o.chat_template);
    ENGINE_INPUT_CHECK(d.chat_template.has_value(), "--chat-template '", o.chat_template,
                       "' is not known; ", models::kChooseChatTemplate);
  } else {
    const models::ChatTemplateLookup found = models::find_chat_template(o.model);
    d.chat_template = found.kind;
    d.chat_template_problem = found.problem;
  }
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const models::Record r = models::read_record(line, in_name, line_no, tok, d);
    out << "{\"ids\": " << id_list(r.example.input_ids) << ", \"labels\": " << id_list(r.example.labels)
        << "}\n";
  }
}

}  // namespace

void tokenize_jsonl(const TokenizeOptions& o, std::istream& in, const std::string& in_name,
                    std::ostream& out) {
  const std::unique_ptr<models::Tokenizer> tok = models::load_tokenizer(o.model);
  if (o.chat) {
    tokenize_chat_jsonl(o, *tok, in, in_name, out);
    out.flush();
    ENGINE_INPUT_CHECK(out.good(), "tokenize: could not write the output");
    return;
  }
  std::vector<std::string> texts;
  std::string line, buffer;
  int64_t line_no = 0;
  auto flush = [&] {
    const auto ids = models::encode_batch(*tok, texts, /*hf_semantics=*/true, o.add_special_tokens,
                                          o.threads);
    for (const std::vector<int32_t>& v : ids) {
      buffer = "{\"ids\": [";
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) buffer += ", ";
        buffer += std::to_string(v[i]);
      }
      buffer += "]}\n";
      out << buffer;
    }
    texts.clear();
  };
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string place = in_name + ":" + std::to_string(line_no);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw engine::InputError(place + ": not valid JSON");
    }
    ENGINE_INPUT_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(), place,
                       ": expected an object with a \"text\" string");
    texts.push_back(j["text"].get<std::string>());
    if (texts.size() == kBlockLines) flush();
  }
  if (!texts.empty()) flush();
  out.flush();
  ENGINE_INPUT_CHECK(out.good(), "tokenize: could not write the output");
}

int tokenize_main(int argc, char** argv) {
  TokenizeOptions o;
  bool no_special = false;
  CLI::App app{"train70b tokenize: JSONL {\"text\": ...} lines to {\"ids\": [...]} lines, with the\n"
               "Hugging Face tokenizer of a model directory (tokenizer.json or tokenizer.model).\n"
               "Special-token text such as <|eot_id|> becomes the special token, as in transformers.",
               "train70b tokenize"};
  app.add_option("--model", o.model, "Hugging Face model directory")->required();
  app.add_flag("--no-special-tokens", no_special, "Do not add the BOS of the post-processor");
  app.add_option("--threads", o.threads, "Encoding threads (0: all cores)")->capture_default_str();
  app.add_flag("--chat", o.chat,
               "Chat records ({\"messages\": [...]}, ShareGPT, Alpaca, ...) through the chat\n"
               "template; prints {\"ids\", \"labels\"} (-100: not trained); the template\n"
               "writes the BOS");
  app.add_option("--chat-template", o.chat_template,
                 "With --chat: llama3, llama3.1, llama3.2 or llama2 (default: the\nmodel's tokenizer_config.json)");
  app.add_flag("--train-on-inputs", o.train_on_inputs, "With --chat: label the prompts too");
  app.add_option("FILE", o.input, "JSONL input (default: standard input)");
  if (const std::optional<int> end = parse_command_line(app, argc, argv, "train70b tokenize"))
    return *end;
  o.add_special_tokens = !no_special;
  try {
    if (o.input.empty() || o.input == "-") {
      tokenize_jsonl(o, std::cin, "<stdin>", std::cout);
    } else {
      std::ifstream in(o.input, std::ios::binary);
      ENGINE_INPUT_CHECK(in, o.input, ": cannot open");
      tokenize_jsonl(o, in, o.input, std::cout);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train70b tokenize: %s\n", e.what());
    return 1;
  }
}

}  // namespace train
