// The built-in DPO demo task (train70b --demo --method dpo), generated in memory: the SFT
// demo's arithmetic progressions modulo 10 (tools/train/demo_task.h). The prompt shows
// three terms ("3,6,9,"); the chosen response continues them ("2,5,8,1,4,"), the rejected
// one continues from the last term with a wrong step ("1,3,5,7,9,"). Preferring the
// right continuation on held-out prompts needs the step read off the prompt, so
// rewards/accuracies on held-out pairs shows whether DPO taught it.
#pragma once
#include <cstdint>
#include <vector>

#include "models/preference_data.h"
#include "models/tokenizer.h"

namespace train {

// Token ids as the string form of preference_data.h gives them: bos + prompt, then the
// response and eos.
std::vector<models::PreferencePair> make_demo_pairs(const models::Tokenizer& tokenizer, int64_t count,
                                                    uint64_t seed);

}  // namespace train
