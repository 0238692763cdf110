// The memory mechanisms of the Llama model on the CPU (docs/memory.md): the MLP in token
// tiles gives the untiled loss and gradients (with LoRA dropout on, so the masks must
// continue across tiles) and a lower peak; checkpoint offloading is a no-op on the CPU
// with identical results.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "models/llama.h"
#include "tests/support/compare.h"

using engine::Tensor;
using models::LlamaModel;

namespace {

models::LlamaConfig config(int64_t intermediate) {
  models::LlamaConfig c = models::preset("tiny");
  c.hidden = 32, c.heads = 4, c.kv_heads = 2, c.head_dim = 8, c.intermediate = intermediate, c.vocab = 40;
  c.layers = 2;
  return c;
}

LlamaModel lora_model(const models::LlamaConfig& c) {
  LlamaModel m(c, 3);
  m.freeze_base(models::BaseFormat::NF4);
  models::LoraConfig lora;
  lora.r = 4;
  lora.alpha = 8;
  lora.dropout = 0.1f;
  m.add_lora(lora, 4);
  engine::Generator gen(9);  // random B so every gradient path carries signal
  for (auto& [name, t] : m.lora_parameters())
    if (name.find("lora_B") != std::string::npos) engine::fill_uniform(t, -0.2f, 0.2f, 9, gen.advance(t.numel()));
  return m;
}

struct Data {
  Tensor ids, labels;
};

Data data(int64_t batch, int64_t seq, int64_t vocab) {
  std::vector<int32_t> ids(batch * seq), labels(batch * seq);
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<int32_t>((i * 7 + 3) % vocab);
    labels[i] = i % 5 == 1 ? -100 : ids[i];
  }
  return {Tensor::from_ints(ids, {batch, seq}), Tensor::from_ints(labels, {batch, seq})};
}

struct Result {
  float loss = 0;
  std::vector<std::string> names;
  std::vector<std::vector<float>> grads;
  size_t peak = 0;  // CPU allocator peak during the step, above what was in use before
};

Result step(const models::LlamaConfig& c, models::ForwardOptions o, int64_t batch, int64_t seq) {
  LlamaModel m = lora_model(c);
  Data d = data(batch, seq, c.vocab);
  engine::Allocator& cpu = engine::cpu_allocator();
  const size_t before = cpu.stats().in_use;
  cpu.reset_peak();
  Result r;
  {
    o.train = true;
    o.dropout_seed = 5;
    Tensor loss = m.loss(d.ids, d.labels, o);
    engine::backward(loss);
    r.loss = loss.item();
  }
  r.peak = cpu.stats().peak - before;
  for (auto& [name, t] : m.lora_parameters()) {
    r.names.push_back(name);
    r.grads.push_back(t.grad().to_floats());
  }
  return r;
}

bool in_mlp(const std::string& name) { return name.find(".mlp.") != std::string::npos; }

}  // namespace

// Tiles of 4, 8 and 12 tokens over 2 x 9 tokens (tiles cross the row boundary), with and
// without layer checkpointing. Loss and every gradient outside the MLP's LoRA factors
// are bitwise the untiled ones (the per-row arithmetic is unchanged, the dropout masks
// continue at the tile's first element); the MLP factors' gradients are sums of
// per-tile partials: one extra rounding per tile on terms no larger than the gradient's
// typical size (tests/engine/test_tiling.cpp states the same bound).
TEST(LlamaTiling, EqualsUntiled) {
  const models::LlamaConfig c = config(48);
  for (bool checkpoint : {false, true}) {
    const Result ref = step(c, {.checkpoint_layers = checkpoint}, 2, 9);
    for (int64_t tile : {4, 8, 12}) {
      SCOPED_TRACE("tile " + std::to_string(tile) + (checkpoint ? " checkpointed" : ""));
      const Result got = step(c, {.checkpoint_layers = checkpoint, .tile_tokens = tile}, 2, 9);
      EXPECT_EQ(got.loss, ref.loss);
      const double tiles = std::ceil(18.0 / tile);
      for (size_t i = 0; i < ref.grads.size(); ++i) {
        if (!in_mlp(ref.names[i])) {
          testing_support::expect_bitwise(got.grads[i], ref.grads[i], ref.names[i]);
          continue;
        }
        testing_support::expect_within(
            got.grads[i], ref.grads[i],
            testing_support::relative_tolerance(ref.grads[i], testing_support::kUnitRoundoffF32,
                                                tiles * testing_support::kUnitRoundoffF32),
            ref.names[i]);
      }
    }
  }
}

// A layer's working set no longer scales with intermediate x tokens: with a wide MLP
// (intermediate 512 = 16 x hidden) and 64 tokens, the untiled recompute holds gate, up
// and SwiGLU outputs of 64 x 512 f32 each (384 KiB) at once, tiles of 8 tokens an eighth
// of that. The peak must drop by at least half of the 7/8 saved (other buffers, like
// the attention's, are the same in both runs).
TEST(LlamaTiling, PeakShrinks) {
  const models::LlamaConfig c = config(512);
  const Result untiled = step(c, {.checkpoint_layers = true}, 1, 64);
  const Result tiled = step(c, {.checkpoint_layers = true, .tile_tokens = 8}, 1, 64);
  const size_t mlp_bytes = 3 * 64 * 512 * sizeof(float);
  EXPECT_LT(tiled.peak + mlp_bytes * 7 / 16, untiled.peak)
      << "untiled peak " << untiled.peak << " B, tiled " << tiled.peak << " B";
}

// On the CPU the saved layer inputs stay where they are: offloading changes nothing.
TEST(LlamaOffload, NoOpOnTheCpu) {
  const models::LlamaConfig c = config(48);
  const Result ref = step(c, {.checkpoint_layers = true}, 2, 7);
  const Result got = step(c, {.checkpoint_layers = true, .offload_checkpoints = true}, 2, 7);
  EXPECT_EQ(got.loss, ref.loss);
  for (size_t i = 0; i < ref.grads.size(); ++i)
    testing_support::expect_bitwise(got.grads[i], ref.grads[i], ref.names[i]);
  EXPECT_EQ(got.peak, ref.peak);
}
