// JSONL training data: loading, the train/eval split, and padded batches.
//
// One JSON object per line (blank lines are skipped), in one of these shapes:
//   {"text": s}                        ids = bos + s + eos; every position trained
//   {"prompt": p, "completion": c}     ids = bos + p + c + eos; bos and prompt labelled -100,
//                                      completion and eos trained
//   {"messages": [{"role": r, "content": s}, ...]}
//                                      Llama 3 chat: bos, then per message
//                                      <|start_header_id|>r<|end_header_id|>\n\ns<|eot_id|>;
//                                      only the content and <|eot_id|> of assistant turns are
//                                      trained (special tokens the tokenizer lacks are spelled
//                                      as text); no eos is added
//   {"input_ids": [...], "labels": [...]}
//                                      pre-tokenized, used as is; labels optional (default:
//                                      input_ids), same length, each -100 or a valid id
// Other keys are ignored; a line matching none of the shapes, or more than one, is an error.
// Labels follow the Hugging Face convention: aligned with input_ids, the loss shifts
// (position t predicts labels[t+1]), so labels[0] is never a target and -100 is ignored.
//
// Examples longer than max_seq_len are truncated to their first max_seq_len tokens (the
// tail, including the eos, is dropped). An example left with no trained target
// (no labels[t] != -100 for t >= 1) is skipped and counted in DatasetStats.
//
// Errors are one engine::Error line `<path>:<line>: <problem>` (line counting from 1),
// `<path>: <problem>` for the whole file (cannot open, no usable examples).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "models/tokenizer.h"

namespace models {

inline constexpr int32_t kIgnoreLabel = -100;

struct Example {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;  // same length as input_ids
};

struct DatasetStats {
  int64_t records = 0;        // non-blank lines
  int64_t examples = 0;       // examples returned
  int64_t truncated = 0;      // examples cut to max_seq_len (returned or skipped)
  int64_t skipped = 0;        // no trained target after truncation
  int64_t tokens = 0;         // tokens in the returned examples
  int64_t target_tokens = 0;  // positions t >= 1 with labels[t] != -100 in them
};

// Throws engine::Error if the file cannot be read, a line is malformed, or no example
// remains. `stats`, when given, receives the counts above.
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
