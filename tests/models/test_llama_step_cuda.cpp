// One full QLoRA training step of a tiny Llama on CUDA against the CPU reference:
// the loss and every LoRA gradient, with an NF4 base (label gpu; skips without one).
//
// In f32 every CUDA op computes in fp32 and differs from the reference only by
// summation order, so each op adds at most K u |value| with u = 2^-24 and K its
// reduction length; chained through the step, the bound used is
//   |cuda - cpu| <= N K u (|cpu| + rms)        N = 4 x ops on the longest path
// (22 per layer + 3, as in test_llama.cpp), K = the longest reduction (vocab or
// hidden or seq x head_dim). In bf16 every op output is rounded (u = 2^-8); the
// worst case N u would allow 70%, so the bf16 check uses the statistical bound for
// independent roundings, 4 sqrt(N / 4) u (4 standard deviations over the 47 ops).
#include <gtest/gtest.h>

#include <cmath>

#include "engine/autograd.h"
#include "models/llama.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"

namespace {

models::LlamaConfig config() {
  models::LlamaConfig c = models::preset("tiny");
  c.hidden = 64, c.heads = 4, c.kv_heads = 2, c.head_dim = 16, c.intermediate = 96, c.vocab = 50;
  return c;
}

struct StepResult {
  float loss;
  std::vector<std::vector<float>> grads;
};

StepResult step(engine::Device device, engine::DType dtype) {
  models::LlamaModel m(config(), 3);
  m.freeze_base(models::BaseFormat::NF4);
  models::LoraConfig lora;
  lora.r = 4;
  lora.alpha = 8;
  lora.dropout = 0.1f;
  m.add_lora(lora, 4);
  for (auto& [name, t] : m.lora_parameters())  // non-zero B: every gradient path carries signal
    if (name.find("lora_B") != std::string::npos) engine::fill_uniform(t, -0.2f, 0.2f, 9, 0);
  if (device.is_cuda()) m.to(device, dtype);
  std::vector<int32_t> ids(2 * 9), labels(2 * 9);
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<int32_t>((i * 7 + 3) % 50);
    labels[i] = i % 4 == 1 ? -100 : ids[i];
  }
  engine::Tensor loss = m.loss(engine::Tensor::from_ints(ids, {2, 9}), engine::Tensor::from_ints(labels, {2, 9}),
                               {.checkpoint_layers = true, .train = true, .dropout_seed = 5});
  engine::backward(loss);
  StepResult r{loss.item(), {}};
  for (auto& [name, t] : m.lora_parameters()) r.grads.push_back(t.grad().to_floats());
  return r;
}

void expect_step_close(engine::DType dtype, double k_u) {
  StepResult cpu = step(engine::Device::cpu(), engine::DType::F32);
  StepResult gpu = step(engine::Device::cuda(), dtype);
  EXPECT_NEAR(gpu.loss, cpu.loss, k_u * std::fabs(cpu.loss));
  ASSERT_EQ(gpu.grads.size(), cpu.grads.size());
  for (size_t i = 0; i < cpu.grads.size(); ++i)
    testing_support::expect_within(gpu.grads[i], cpu.grads[i],
                                   testing_support::relative_tolerance(cpu.grads[i], 0, k_u),
                                   "LoRA tensor " + std::to_string(i));
}

constexpr double kOpsOnPath = 4.0 * (22 * 2 + 3);

}  // namespace

TEST(LlamaStepCuda, F32MatchesCpuReference) {
  SKIP_WITHOUT_GPU();
  const double longest_reduction = 9.0 * 16;  // seq x head_dim (> vocab 50, hidden 64)
  expect_step_close(engine::DType::F32, kOpsOnPath * longest_reduction / (1 << 24));
}

TEST(LlamaStepCuda, Bf16MatchesCpuReference) {
  SKIP_WITHOUT_GPU();
  expect_step_close(engine::DType::BF16, 4.0 * std::sqrt(kOpsOnPath / 4) / 256);
}
