// Held-out evaluation: token-weighted loss and greedy next-token accuracy.
#pragma once
#include <string>
#include <vector>

#include "models/dataset.h"
#include "models/llama.h"
#include "tools/train/trainer.h"

namespace train {

EvalResult evaluate(const models::LlamaModel& model, const std::vector<models::Example>& examples,
                    int64_t batch_size);
// "held-out <when>: loss L  accuracy A%  (N tokens)"
std::string eval_line(const char* when, const EvalResult& r);

}  // namespace train
