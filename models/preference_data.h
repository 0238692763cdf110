// Preference pairs for DPO: JSONL, one pair per line (blank lines skipped), as TRL's
// DPOTrainer takes them:
//   {"prompt": p, "chosen": c, "rejected": r}      strings: the prompt tokenized as the
//        tokenizer does by default (encode_hf with special tokens: Llama 3's BOS), chosen
//        and rejected without special tokens, each followed by the EOS token
//   {"prompt": [messages], "chosen": [messages], "rejected": [messages]}
//        conversational: each {role, content}; chosen/rejected are the assistant
//        message(s) that answer the prompt (a single message object is accepted too).
//        prompt + response is rendered with the chat template; the response tokens are
//        those after the prompt rendered with the generation prompt that the template
//        trains (the content and the token closing the turn, such as <|eot_id|>).
// Each side becomes an Example whose labels are -100 on the prompt: only response tokens
// count. A side longer than max_seq_len is cut to its first max_seq_len tokens; a pair
// left without a response token on either side is skipped; both are counted.
// Errors are one engine::InputError line `<path>:<line>: field "<name>": <problem>`.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/dataset.h"

namespace models {

struct PreferencePair {
  Example chosen, rejected;
};

struct PreferenceStats {
  // truncated: a side cut to max_seq_len (Truncation::Right); dropped: a pair with a side
  // longer than that, left out (Truncation::Drop).
  int64_t records = 0, pairs = 0, conversational = 0, truncated = 0, dropped = 0, skipped = 0;
};

std::vector<PreferencePair> load_preference_dataset(const std::string& path,
                                                    const Tokenizer& tokenizer,
                                                    const DatasetOptions& options,
                                                    PreferenceStats* stats = nullptr);

// One line's pair (the parser above, for tests); `path` and `line` name it in errors.
PreferencePair read_preference_record(std::string_view line, const std::string& path,
                                      int64_t line_number, const Tokenizer& tokenizer,
                                      const DatasetOptions& options, bool* conversational = nullptr);

}  // namespace models
