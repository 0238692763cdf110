#include "tools/train/dpo_demo.h"

#include <string>

#include "engine/rng.h"

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

std::vector<models::PreferencePair> make_demo_pairs(const models::Tokenizer& tok, int64_t count,
                                                    uint64_t seed) {
  engine::Generator gen(seed);
  const std::vector<float> u = engine::uniform({count, 3}, 0.0f, 1.0f, gen).to_floats();
  std::vector<models::PreferencePair> out;
  for (int64_t i = 0; i < count; ++i) {
    const int start = static_cast<int>(u[3 * i] * 10) % 10;
    const int step = 1 + static_cast<int>(u[3 * i + 1] * 9) % 9;
    const int wrong = 1 + (step - 1 + 1 + static_cast<int>(u[3 * i + 2] * 8) % 8) % 9;  // != step
    std::vector<int32_t> prompt{tok.bos_id()};
    for (int32_t id : tok.encode(terms(start, step, 0, 3))) prompt.push_back(id);
    const int last = (start + 2 * step) % 10;
    out.push_back({side(tok, prompt, terms(start, step, 3, 5)), side(tok, prompt, terms(last, wrong, 1, 5))});
  }
  return out;
}

}  // namespace train
