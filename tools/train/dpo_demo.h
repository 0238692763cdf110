// The built-in DPO demo task (train70b --demo --method dpo), generated in memory: the SFT
// demo's arithmetic progressions modulo 10 (tools/train/demo_task.h). The prompt shows
// three terms ("3,6,9,"); the chosen response continues them ("2,5,8,1,4,"), the rejected
// one starts the progression over ("3,6,9,2,5,"): the failure of a model that repeats its
// prompt instead of continuing it. The held-out pairs come from the progressions the SFT
// demo holds out (demo_progressions), never trained on, so rewards/accuracies on them
// shows a preference DPO taught in general, not pairs it memorised.
#pragma once
#include <cstdint>
#include <vector>

#include "models/preference_data.h"
#include "models/tokenizer.h"

namespace train {

// `count` pairs of the held-out (`held_out`) or the trained progressions, token ids as the
// string form of preference_data.h gives them: bos + prompt, then the response and eos.
std::vector<models::PreferencePair> make_demo_pairs(const models::Tokenizer& tokenizer, int64_t count,
                                                    uint64_t seed, bool held_out);

}  // namespace train
