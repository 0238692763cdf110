// The engine's CUDA path (bf16 activations, fp32 accumulation, fp32 LoRA masters) against
// Hugging Face (f32) on the model of tests/data/hf_reference/: logits at the real (non-pad)
// positions, the loss, every LoRA gradient (label gpu; skips without a GPU). Padding and
// model as in test_hf_reference.cpp; the frozen base stays f32 here because HF's weights
// are f32 (the NF4 path is compared with the CPU reference by the op harness and
// test_llama_step_cuda.cpp).
//
// Bound: k times a same-precision baseline. reference.safetensors also holds what HF
// computes with the model cast to bf16 (LoRA factors kept f32); per compared tensor T its
// error e_bf16(T) = ||T_bf16 - T_f32||_2 is what bf16 rounding costs on this model and
// batch. The engine rounds to bf16 at a subset of the baseline's points: each op's output,
// where the baseline also rounds the linear weights, the attention scores, the rope
// products (cos, sin in bf16) and the RMSNorm and SiLU intermediates. Both errors are sums
// of many independent roundings of the same kind, so the engine's 2-norm should not
// exceed the baseline's; k = 2 allows for the two being different draws of such a sum.
// (The 2-norm, not the largest element: the largest of a few hundred errors is one draw
// and varies by 1.5x between two such sums, the norm averages.)
//   ||T_engine - T_f32||_2 <= 2 e_bf16(T), every element finite     logits, LoRA gradients
//   |loss_engine - loss_f32| <= 2 |loss_bf16 - loss_f32| + u_bf16 |loss|   (the engine's
//                                                        loss is a bf16 value: one rounding)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "tests/support/compare.h"
#include "tests/support/gpu.h"
#include "tests/support/hf_reference.h"

namespace {

using testing_support::HfReference;

constexpr double kTimesBaseline = 2.0;

double distance(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return std::sqrt(s);
}

// ||got - want||_2 <= k e_bf16, got finite; records the largest ratio to the bound.
void expect_within_baseline(const std::vector<float>& got, const std::vector<float>& want,
                            const std::vector<float>& baseline, const std::string& what,
                            double* worst_ratio) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_EQ(baseline.size(), want.size()) << what;
  int non_finite = 0;
  for (float g : got) non_finite += !std::isfinite(g);
  EXPECT_EQ(non_finite, 0) << what << ": non-finite elements";
  const double bound = kTimesBaseline * distance(baseline, want), err = distance(got, want);
  EXPECT_LE(err, bound) << what << ": ||engine - HF f32||_2 " << err << ", bf16 baseline's "
                        << bound / kTimesBaseline;
  *worst_ratio = std::max(*worst_ratio, err / bound);
}

TEST(HfReferenceCuda, Bf16MatchesHuggingFaceWithinTwiceTheBf16Baseline) {
  SKIP_WITHOUT_GPU();
  const HfReference ref =
      testing_support::load_hf_reference(std::string(ENGINE_SOURCE_DIR) + "/tests/data/hf_reference");
  auto model = testing_support::load_engine_model(ref);
  model->to(engine::Device::cuda(), engine::DType::BF16);
  const testing_support::EngineRun run = testing_support::run_engine(*model, ref);

  using testing_support::real_positions;
  const std::vector<float> want = real_positions(ref.logits, ref);
  double logits_ratio = 0, grads_ratio = 0;
  expect_within_baseline(real_positions(run.logits, ref), want, real_positions(ref.bf16_logits, ref),
                         "logits", &logits_ratio);

  const double loss_bound = kTimesBaseline * std::fabs(ref.bf16_loss - ref.loss) +
                            testing_support::kUnitRoundoffBF16 * std::fabs(ref.loss);
  EXPECT_NEAR(run.loss, ref.loss, loss_bound);

  ASSERT_EQ(run.grads.size(), ref.grads.size());
  for (const auto& [name, g] : ref.grads) {
    ASSERT_TRUE(run.grads.count(name)) << "the engine has no LoRA factor " << name;
    expect_within_baseline(run.grads.at(name), g, ref.bf16_grads.at(name), name, &grads_ratio);
  }
  std::printf("[ measured ] |engine - HF| / bound: logits %.3g, loss %.3g, LoRA grads (worst) %.3g\n",
              logits_ratio, std::fabs(run.loss - ref.loss) / loss_bound, grads_ratio);
}

}  // namespace
