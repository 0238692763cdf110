#include "tools/train/demo_task.h"

#include <cmath>
#include <string>

#include "engine/rng.h"

namespace train {

std::vector<Progression> demo_progressions(bool held_out) {
  std::vector<Progression> out;
  for (int step = 1; step <= 9; ++step)
    for (int start = 0; start < 10; ++start)
      if (((start + 3 * step) % 10 == 7) == held_out) out.push_back({start, step});
  return out;
}

std::vector<Progression> draw_progressions(int64_t count, uint64_t seed, bool held_out) {
  const std::vector<Progression> set = demo_progressions(held_out);
  engine::Generator gen(seed);
  const std::vector<float> u = engine::uniform({count}, 0.0f, 1.0f, gen).to_floats();
  std::vector<Progression> out;
  for (const float x : u)
    out.push_back(set[static_cast<size_t>(x * static_cast<float>(set.size())) % set.size()]);
  return out;
}

int64_t demo_held_out_count(int64_t total, double eval_fraction) {
  return static_cast<int64_t>(std::llround(eval_fraction * static_cast<double>(total)));
}

std::vector<models::Example> make_demo_examples(const models::Tokenizer& tok, int64_t count, uint64_t seed,
                                                bool held_out) {
  std::vector<models::Example> out;
  for (const Progression& p : draw_progressions(count, seed, held_out)) {
    std::string prompt, completion;
    for (int t = 0; t < 8; ++t) (t < 3 ? prompt : completion) += std::to_string((p.start + p.step * t) % 10) + ",";
    models::Example e;
    e.input_ids.push_back(tok.bos_id());
    for (int32_t id : tok.encode(prompt)) e.input_ids.push_back(id);
    e.labels.assign(e.input_ids.size(), models::kIgnoreLabel);
    for (int32_t id : tok.encode(completion)) {
      e.input_ids.push_back(id);
      e.labels.push_back(id);
    }
    e.input_ids.push_back(tok.eos_id());
    e.labels.push_back(tok.eos_id());
    out.push_back(std::move(e));
  }
  return out;
}

models::DatasetSplit make_demo_split(const models::Tokenizer& tok, int64_t total, double eval_fraction,
                                     uint64_t seed) {
  const int64_t held = demo_held_out_count(total, eval_fraction);
  return {make_demo_examples(tok, total - held, seed, false), make_demo_examples(tok, held, seed + 1, true)};
}

}  // namespace train
