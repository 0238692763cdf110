// `train70b eval --model DIR [--adapter DIR] --dataset FILE [--output FILE.json]`: the
// loss, perplexity (exp of the loss), greedy next-token accuracy and token count of a
// model, with or without a PEFT adapter, over every example of a dataset; the same
// numbers a training run logs as "held-out" for the same examples (tools/train/evaluate.h).
#pragma once
#include <string>

#include "tools/train/trainer.h"

namespace train {

// {"loss": L, "perplexity": P, "accuracy": A, "tokens": N}
std::string eval_result_json(const EvalResult& r);

int eval_main(int argc, char** argv);

}  // namespace train
