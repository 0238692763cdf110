// Packing on CUDA (label gpu; skips without one): one QLoRA step of a small Llama on
// packed rows on the device against the same examples unpacked on the CPU reference:
// the loss and every LoRA gradient. Head dim 64, so bf16 runs the tensor-core attention
// with its document mask (f32 runs the fallback kernels with theirs).
//
// Bounds as in tests/models/test_llama_step_cuda.cpp, whose derivation applies: per
// token the packed device step computes the unpacked reference's values (the same
// positions and visible keys), by fp32 ops that differ from it in summation order:
//   f32:  |cuda - cpu| <= N K u (|cpu| + rms),  N = 4 x ops on the longest path,
//         K = the longest reduction (seq x head_dim), u = 2^-24;
//   bf16: 4 sqrt(N / 4) u_bf16 (independent roundings, 4 standard deviations).
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "engine/autograd.h"
#include "models/llama.h"
#include "models/packing.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"

namespace {

constexpr int64_t kSeq = 16;
constexpr double kOpsOnPath = 4.0 * (22 * 2 + 3);

models::LlamaConfig config() {
  models::LlamaConfig c = models::preset("tiny");
  c.hidden = 128, c.heads = 2, c.kv_heads = 1, c.head_dim = 64, c.intermediate = 96, c.vocab = 50;
  c.layers = 2;
  return c;
}

std::vector<models::Example> examples() {
  std::vector<models::Example> out;
  uint32_t x = 777;
  for (int n : {6, 11, 3, 16, 8, 5, 2}) {
    models::Example e;
    for (int t = 0; t < n; ++t) {
      x = x * 1664525u + 1013904223u;
      e.input_ids.push_back(static_cast<int32_t>((x >> 8) % 50u));
      e.labels.push_back(t < n / 3 ? models::kIgnoreLabel : e.input_ids.back());
    }
    out.push_back(std::move(e));
  }
  return out;
}

struct StepResult {
  float loss;
  std::vector<std::vector<float>> grads;
};

StepResult step(engine::Device device, engine::DType dtype, const models::Batch& batch,
                const models::ForwardOptions& options) {
  models::LlamaModel m(config(), 3);
  m.freeze_base(models::BaseFormat::NF4);
  models::LoraConfig lora;
  lora.r = 4;
  lora.alpha = 8;
  m.add_lora(lora, 4);
  for (auto& [name, t] : m.lora_parameters())  // non-zero B: every gradient path carries signal
    if (name.find("lora_B") != std::string::npos) engine::fill_uniform(t, -0.2f, 0.2f, 9, 0);
  if (device.is_cuda()) m.to(device, dtype);
  engine::Tensor loss = m.loss(batch.ids, batch.labels, options);
  engine::backward(loss);
  StepResult r{loss.item(), {}};
  for (auto& [name, t] : m.lora_parameters()) r.grads.push_back(t.grad().to_floats());
  return r;
}

void expect_packed_close(engine::DType dtype, double k_u) {
  const std::vector<models::Example> ex = examples();
  std::vector<int64_t> all(ex.size());
  std::iota(all.begin(), all.end(), 0);
  const StepResult cpu =
      step(engine::Device::cpu(), engine::DType::F32, models::make_batch(ex, all, 0), {});

  const auto rows = models::pack_examples(ex, kSeq, 5);
  std::vector<int64_t> every_row(rows.size());
  std::iota(every_row.begin(), every_row.end(), 0);
  const models::PackedBatch packed = models::make_packed_batch(ex, rows, every_row, kSeq, 0);
  models::ForwardOptions o;
  o.positions = packed.positions;
  o.doc_start = packed.doc_start;
  const StepResult gpu = step(engine::Device::cuda(), dtype, packed.batch, o);

  EXPECT_NEAR(gpu.loss, cpu.loss, k_u * std::fabs(cpu.loss));
  ASSERT_EQ(gpu.grads.size(), cpu.grads.size());
  for (size_t i = 0; i < cpu.grads.size(); ++i)
    testing_support::expect_within(gpu.grads[i], cpu.grads[i],
                                   testing_support::relative_tolerance(cpu.grads[i], 0, k_u),
                                   "LoRA tensor " + std::to_string(i));
}

}  // namespace

TEST(PackingCuda, F32PackedStepMatchesUnpackedCpuReference) {
  SKIP_WITHOUT_GPU();
  expect_packed_close(engine::DType::F32, kOpsOnPath * double(kSeq * 64) / (1 << 24));
}

TEST(PackingCuda, Bf16PackedStepMatchesUnpackedCpuReference) {
  SKIP_WITHOUT_GPU();
  expect_packed_close(engine::DType::BF16, 4.0 * std::sqrt(kOpsOnPath / 4) / 256);
}
