// The built-in demo task, generated in memory (no downloads): arithmetic
// progressions modulo 10 written as digits. The prompt shows the first three
// terms ("3,6,9,") and the completion continues them ("2,5,8,1,4"). Reading the
// step off the prompt and continuing it is a small, exactly checkable skill, so the
// held-out loss and accuracy show learning plainly.
//
// Held out are whole progressions, not only examples: of the 90 (first term, step) pairs,
// the 9 with (start + 3 step) % 10 == 7 (one per step) are never trained on, so the
// held-out numbers measure continuing a progression the model has not seen.
#pragma once
#include <cstdint>
#include <vector>

#include "models/dataset.h"
#include "models/tokenizer.h"

namespace train {

struct Progression {
  int start, step;  // first term 0..9, step 1..9
};

// The progressions held out for evaluation (`held_out`), or the others, for training.
std::vector<Progression> demo_progressions(bool held_out);

// `count` progressions drawn uniformly from demo_progressions(held_out), seeded.
std::vector<Progression> draw_progressions(int64_t count, uint64_t seed, bool held_out);

// The held-out examples of a demo of `total` examples: round(eval_fraction * total).
int64_t demo_held_out_count(int64_t total, double eval_fraction);

// Prompt and completion token ids (labels on the completion and eos) of `count` drawn
// progressions.
std::vector<models::Example> make_demo_examples(const models::Tokenizer& tokenizer, int64_t count,
                                                uint64_t seed, bool held_out);

// The demo's split: training examples of the trained progressions, evaluation examples
// of the held-out ones.
models::DatasetSplit make_demo_split(const models::Tokenizer& tokenizer, int64_t total, double eval_fraction,
                                     uint64_t seed);

}  // namespace train
