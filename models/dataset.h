// JSONL training data: loading, the train/eval split, and padded batches.
//
// One JSON object per line (blank lines are skipped), in one of these formats
// (dataset_formats.h converts a record; bos/eos are the tokenizer's):
//   {"text": s}                        ids = bos + s + eos; every position trained
//   {"prompt": p, "completion": c}     ids = bos + p + c + eos; bos and prompt labelled -100,
//                                      completion and eos trained
//   {"messages": [{"role": r, "content": s}, ...]}
//                                      the model's chat template (chat_template.h); the
//                                      content of assistant turns and the token closing
//                                      each is trained
//   {"conversations": [{"from": f, "value": s}, ...]}
//                                      ShareGPT: from system, human|user, gpt|assistant;
//                                      then as messages
//   {"instruction": i, "input": x, "output": o}
//                                      Alpaca ("input" optional): one user message
//                                      i, or i + "\n\n" + x when x is not empty, and one
//                                      assistant message o, through the chat template
//   {"input_ids": [...], "labels": [...]}
//                                      pre-tokenized, used as is; labels optional (default:
//                                      input_ids), same length, each -100 or a valid id
// Other keys are ignored; a line matching none of the shapes, or more than one, is an error.
// train_on_inputs trains every position of the text formats (pre-tokenized labels stay).
// Labels follow the Hugging Face convention: aligned with input_ids, the loss shifts
// (position t predicts labels[t+1]), so labels[0] is never a target and -100 is ignored.
//
// Examples longer than max_seq_len are truncated to their first max_seq_len tokens (the
// tail, including the eos, is dropped), or dropped with Truncation::Drop; both are
// counted. An example left with no trained target (no labels[t] != -100 for t >= 1) is
// skipped and counted in DatasetStats; a file with no trained target at all is refused.
// Records are tokenized on all cores; the result does not depend on the thread count.
//
// Errors are one engine::InputError line `<path>:<line>: <problem>` (line counting from 1),
// `<path>: <problem>` for the whole file (cannot open, no usable examples).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "models/chat_template.h"
#include "models/jsonl_lines.h"
#include "models/tokenizer.h"

namespace models {

inline constexpr int32_t kIgnoreLabel = -100;

struct Example {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;  // same length as input_ids
};

// The record formats above, in that order.
enum class RecordFormat { Text, PromptCompletion, Messages, ShareGPT, Alpaca, Pretokenized };
inline constexpr int kRecordFormats = 6;
const char* record_format_name(RecordFormat f);  // "text", "prompt_completion", ...

enum class Truncation { Right, Drop };

struct DatasetOptions {
  int64_t max_seq_len = 512;
  Truncation truncation = Truncation::Right;
  bool train_on_inputs = false;
  // The chat template for messages, ShareGPT and Alpaca records; when absent, such a
  // record is an error that says `chat_template_problem` and how to choose one.
  std::optional<ChatTemplate> chat_template;
  std::string chat_template_problem;
  std::string date;  // llama3.2's Today Date (empty: today)
  int threads = 0;   // 0: all cores
  int64_t max_line_bytes = kDefaultMaxLineBytes;  // a longer line is refused (models/jsonl_lines.h)
};

struct DatasetStats {
  int64_t records = 0;        // non-blank lines
  int64_t examples = 0;       // examples returned
  int64_t truncated = 0;      // examples cut to max_seq_len (returned or skipped)
  int64_t dropped = 0;        // longer than max_seq_len, dropped (Truncation::Drop)
  int64_t skipped = 0;        // no trained target (after truncation)
  int64_t tokens = 0;         // tokens in the returned examples
  int64_t target_tokens = 0;  // positions t >= 1 with labels[t] != -100 in them
  int64_t per_format[kRecordFormats] = {};
  int64_t duplicates = 0;       // records whose ids and labels equal an earlier record's
  int64_t empty_responses = 0;  // an assistant turn, completion or output that is blank
  std::vector<int64_t> lengths;  // tokens per record before truncation, in file order
};

// Throws engine::Error if the file cannot be read, a line is malformed, or no example
// remains. `stats`, when given, receives the counts above.
std::vector<Example> load_jsonl_dataset(const std::string& path, const Tokenizer& tokenizer,
                                        const DatasetOptions& options,
                                        DatasetStats* stats = nullptr);
// The defaults above with this max_seq_len, and the llama3 chat template.
std::vector<Example> load_jsonl_dataset(const std::string& path, const Tokenizer& tokenizer,
                                        int64_t max_seq_len, DatasetStats* stats = nullptr);

struct DatasetSplit {
  std::vector<Example> train, eval;
};

// Holds out round(eval_fraction * n) examples (at least 1 when eval_fraction > 0, leaving
// at least 1 for training), chosen by a Fisher-Yates shuffle drawn from a Philox
// engine::Generator seeded with `seed`: the same (examples, eval_fraction, seed) always give
// the same split. Both halves keep the input order. eval_fraction must be in [0, 1).
DatasetSplit split_train_eval(std::vector<Example> examples, double eval_fraction, uint64_t seed);

struct Batch {
  engine::Tensor ids;         // i32 [B, T] on the CPU, rows padded on the right with pad_id
  engine::Tensor labels;      // i32 [B, T], -100 over the padding
  int64_t target_tokens = 0;  // positions the loss counts (labels[b, t] != -100, t >= 1)
};

// Rows examples[indices[0]], examples[indices[1]], ...; T is the longest row. Right padding
// needs no attention mask under causal attention: real tokens never attend to it.
Batch make_batch(const std::vector<Example>& examples, const std::vector<int64_t>& indices,
                 int64_t pad_id);

}  // namespace models
