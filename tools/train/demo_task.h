// The built-in demo task, generated in memory (no downloads): arithmetic
// progressions modulo 10 written as digits. The prompt shows the first three
// terms ("3,6,9,") and the completion continues them ("2,5,8,1,4"). Reading the
// step off the prompt and continuing it is a small, exactly checkable skill, so the
// held-out loss and accuracy show learning plainly.
#pragma once
#include <vector>

#include "models/dataset.h"
#include "models/tokenizer.h"

namespace train {

std::vector<models::Example> make_demo_examples(const models::Tokenizer& tokenizer, int64_t count,
                                                uint64_t seed);

}  // namespace train
