// Held-out evaluation: token-weighted loss and greedy next-token accuracy.
#pragma once
#include <string>
#include <vector>

#include "models/dataset.h"
#include "models/llama.h"
#include "tools/train/trainer.h"

namespace train {

// tile_tokens: the MLP's token tile (models::ForwardOptions), as in training, so that
// evaluation's working set stays within the run's memory plan (0: untiled).
EvalResult evaluate(const models::LlamaModel& model, const std::vector<models::Example>& examples,
                    int64_t batch_size, int64_t tile_tokens = 0);
// "<split> <when>: loss L  perplexity P  accuracy A%  (N tokens)"
std::string eval_line(const char* when, const EvalResult& r, const char* split = "held-out");

// The forgetting check: general-text perplexity before and after, and whether it rose by
// more than `threshold` (a fraction). One plain sentence for the log and the summary.
std::string forgetting_line(const EvalResult& before, const EvalResult& after, double threshold,
                            bool* forgetting);

// How many `eval` examples have tokens and labels identical to a training example's.
size_t count_examples_seen_in_training(const std::vector<models::Example>& eval,
                                      const std::vector<models::Example>& train);

}  // namespace train
