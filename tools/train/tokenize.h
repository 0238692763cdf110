// `train70b tokenize`: JSONL text to token ids with a model directory's tokenizer.
#pragma once
#include <iosfwd>
#include <string>

namespace train {

struct TokenizeOptions {
  std::string model;             // Hugging Face model directory (tokenizer.json / .model)
  bool add_special_tokens = true;  // --no-special-tokens turns it off
  std::string input;             // JSONL file; empty or "-": standard input
  int threads = 0;               // 0: all cores
  // --chat: chat records ({"messages": [...]}, and the other formats of models/dataset.h)
  // through the chat template (--chat-template, else the model's), printed as
  // {"ids": [...], "labels": [...]} with -100 where nothing is trained.
  bool chat = false;
  std::string chat_template;
  bool train_on_inputs = false;
};

// Reads {"text": ...} lines from `in` (named `in_name` in errors) and writes one
// {"ids": [...]} line per input line to `out`, in order, encoding with Hugging Face
// semantics (Tokenizer::encode_hf: special-token text is the special token; the
// post-processor's BOS when add_special_tokens). Blank lines are skipped. Throws
// engine::InputError naming the file and line.
void tokenize_jsonl(const TokenizeOptions& options, std::istream& in, const std::string& in_name,
                    std::ostream& out);

// The subcommand: parses argv (argv[0] is "tokenize"), runs, returns the exit status;
// errors are one line on stderr.
int tokenize_main(int argc, char** argv);

}  // namespace train
