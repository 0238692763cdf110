#include "tools/train/demo_task.h"

#include <string>

#include "engine/rng.h"

namespace train {

std::vector<models::Example> make_demo_examples(const models::Tokenizer& tok, int64_t count,
                                                uint64_t seed) {
  engine::Generator gen(seed);
  std::vector<float> u = engine::uniform({count, 2}, 0.0f, 1.0f, gen).to_floats();
  std::vector<models::Example> out;
  for (int64_t i = 0; i < count; ++i) {
    const int start = static_cast<int>(u[2 * i] * 10) % 10;
    const int step = 1 + static_cast<int>(u[2 * i + 1] * 9) % 9;
    std::string prompt, completion;
    for (int t = 0; t < 8; ++t) (t < 3 ? prompt : completion) += std::to_string((start + step * t) % 10) + ",";
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

}  // namespace train
