#include "tools/train/dpo_demo.h"

#include <string>

#include "tools/train/demo_task.h"

namespace train {

namespace {

std::string terms(int start, int step, int first, int count) {
  std::string s;
  for (int t = first; t < first + count; ++t) s += std::to_string((start + step * t) % 10) + ",";
  return s;
}

models::Example side(const models::Tokenizer& tok, const std::vector<int32_t>& prompt,
                     const std::string& response) {
  models::Example e;
  e.input_ids = prompt;
  e.labels.assign(prompt.size(), models::kIgnoreLabel);
  std::vector<int32_t> r = tok.encode(response);
  r.push_back(tok.eos_id());
  e.input_ids.insert(e.input_ids.end(), r.begin(), r.end());
  e.labels.insert(e.labels.end(), r.begin(), r.end());
  return e;
}

}  // namespace

std::vector<models::PreferencePair> make_demo_pairs(const models::Tokenizer& tok, int64_t count, uint64_t seed,
                                                    bool held_out) {
  std::vector<models::PreferencePair> out;
  for (const auto& [start, step] : draw_progressions(count, seed, held_out)) {
    std::vector<int32_t> prompt{tok.bos_id()};
    for (int32_t id : tok.encode(terms(start, step, 0, 3))) prompt.push_back(id);
    // chosen: terms 3..7; rejected: terms 0..4, the prompt said again.
    out.push_back({side(tok, prompt, terms(start, step, 3, 5)), side(tok, prompt, terms(start, step, 0, 5))});
  }
  return out;
}

}  // namespace train
