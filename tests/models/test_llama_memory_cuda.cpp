// The memory mechanisms on the CUDA path (label gpu; run on the CPU by the SIMT build):
// offloaded checkpoints and the host embedding give bitwise the loss and LoRA gradients
// of the plain run and lower the device peak by what they move off; the tiled MLP
// matches the untiled step within the bf16 bound of tests/models/test_llama_step_cuda.cpp
// (a tile may take another matmul path, the NF4 small-M kernel, so the rounding differs).
#include <gtest/gtest.h>

#include <cmath>

#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/offload.h"
#include "models/llama.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"

namespace {

constexpr int64_t kBatch = 2, kSeq = 16, kLayers = 6;

models::LlamaConfig config() {
  models::LlamaConfig c = models::preset("tiny");
  c.hidden = 64, c.heads = 4, c.kv_heads = 2, c.head_dim = 16, c.intermediate = 96, c.vocab = 50;
  c.layers = kLayers;
  return c;
}

struct StepResult {
  float loss = 0;
  std::vector<std::vector<float>> grads;
  size_t peak = 0;           // device allocator peak during the step, above the model
  size_t model_bytes = 0;    // device bytes in use once the model is there
};

StepResult step(models::ForwardOptions o, bool embedding_on_host) {
  engine::Allocator& device = engine::allocator_for(engine::Device::cuda());
  const size_t before_model = device.stats().in_use;
  StepResult r;
  models::LlamaModel m(config(), 3);
  m.freeze_base(models::BaseFormat::NF4);
  models::LoraConfig lora;
  lora.r = 4;
  lora.alpha = 8;
  lora.dropout = 0.1f;
  m.add_lora(lora, 4);
  for (auto& [name, t] : m.lora_parameters())  // non-zero B: every gradient path carries signal
    if (name.find("lora_B") != std::string::npos) engine::fill_uniform(t, -0.2f, 0.2f, 9, 0);
  m.to(engine::Device::cuda(), engine::DType::BF16);
  if (embedding_on_host) m.keep_embedding_on_host();
  std::vector<int32_t> ids(kBatch * kSeq), labels(kBatch * kSeq);
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<int32_t>((i * 7 + 3) % 50);
    labels[i] = i % 4 == 1 ? -100 : ids[i];
  }
  r.model_bytes = device.stats().in_use - before_model;
  const size_t before_step = device.stats().in_use;
  device.reset_peak();
  {
    o.train = true;
    o.dropout_seed = 5;
    engine::Tensor loss = m.loss(engine::Tensor::from_ints(ids, {kBatch, kSeq}),
                                 engine::Tensor::from_ints(labels, {kBatch, kSeq}), o);
    engine::backward(loss);
    r.loss = loss.item();
  }
  r.peak = device.stats().peak - before_step;
  for (auto& [name, t] : m.lora_parameters()) r.grads.push_back(t.grad().to_floats());
  return r;
}

void expect_bitwise(const StepResult& got, const StepResult& ref) {
  EXPECT_EQ(got.loss, ref.loss);
  ASSERT_EQ(got.grads.size(), ref.grads.size());
  for (size_t i = 0; i < ref.grads.size(); ++i)
    testing_support::expect_bitwise(got.grads[i], ref.grads[i], "LoRA tensor " + std::to_string(i));
}

constexpr size_t kCheckpointBytes = kBatch * kSeq * 64 * 2;  // one layer input, bf16

}  // namespace

// Without offload all six layer inputs sit on the device through backward; with it at
// most three (the one in flight to the host, the one being recomputed, the previous one
// prefetched), so the peak drops by at least three checkpoints' bytes. The pinned host
// buffers hold every checkpoint and go back to the pool after the step.
TEST(LlamaOffloadCuda, BitwiseEqualAndPeakLower) {
  SKIP_WITHOUT_GPU();
  const StepResult plain = step({.checkpoint_layers = true}, false);
  const StepResult offloaded = step({.checkpoint_layers = true, .offload_checkpoints = true}, false);
  expect_bitwise(offloaded, plain);
  EXPECT_GE(plain.peak, offloaded.peak + (kLayers - 3) * kCheckpointBytes)
      << "peak without offload " << plain.peak << " B, with " << offloaded.peak << " B";
  EXPECT_EQ(engine::offload_pool_bytes(), kLayers * kCheckpointBytes);
  engine::release_offload_pool();
  EXPECT_EQ(engine::offload_pool_bytes(), 0u);
}

// The embedding's rows gathered on the host and uploaded are the device gather's values.
TEST(LlamaEmbeddingOnHostCuda, BitwiseEqualAndTableOffTheDevice) {
  SKIP_WITHOUT_GPU();
  const StepResult plain = step({.checkpoint_layers = true}, false);
  const StepResult host = step({.checkpoint_layers = true}, true);
  expect_bitwise(host, plain);
  const size_t table_bytes = 50 * 64 * 2;
  EXPECT_EQ(plain.model_bytes, host.model_bytes + table_bytes);
}

TEST(LlamaTilingCuda, MatchesUntiled) {
  SKIP_WITHOUT_GPU();
  const StepResult untiled = step({.checkpoint_layers = true}, false);
  const StepResult tiled = step({.checkpoint_layers = true, .tile_tokens = 12}, false);
  const double ops_on_path = 4.0 * (22 * kLayers + 3);
  const double k_u = 4.0 * std::sqrt(ops_on_path / 4) / 256;
  EXPECT_NEAR(tiled.loss, untiled.loss, k_u * std::fabs(untiled.loss));
  for (size_t i = 0; i < untiled.grads.size(); ++i)
    testing_support::expect_within(tiled.grads[i], untiled.grads[i],
                                   testing_support::relative_tolerance(untiled.grads[i], 0, k_u),
                                   "LoRA tensor " + std::to_string(i));
}
