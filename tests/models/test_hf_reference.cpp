// The engine's CPU path (f32) against Hugging Face transformers + peft (f32, CPU) on the
// model of tests/data/hf_reference/ (tests/data/make_hf_reference.py: GQA, llama3 RoPE
// scaling, odd sizes, LoRA on all seven linears with nonzero factors): logits of a
// right-padded batch, the loss, and every LoRA gradient. The engine loads the same
// config.json, model.safetensors and PEFT adapter directory that HF wrote.
//
// Padding: the engine has no attention mask; right padding with labels -100 at the pads
// is exact for the real tokens (causal attention: no real token sees a later pad). HF
// masks the pads as keys, so logits at pad positions differ and only real positions are
// compared. The loss is HF's: the mean over counted (shifted, not -100) tokens.
//
// Bound (derived, not tuned). Both sides evaluate the same function in fp32 and differ only
// in the order and grouping of roundings. As in the op harness (tests/support/compare.h), a
// chain of K roundings moves an element by at most 2 K u (|ref| + rms ref), u = 2^-24, on
// top of the final rounding u |ref|. K is the longest chain of rounded operations feeding
// the element, the sum of the reduction lengths on the path; the layers are normalized
// (RMSNorm, 1/sqrt(in) weights), so the chain is not amplified beyond O(1) per op.
//   per layer  K_l = hidden (norm) + max(hidden, q_dim) + r (q, k, v) + head_dim (scores)
//                    + 2 seq (softmax, P V) + max(q_dim, hidden) + r (o_proj) + hidden (norm)
//                    + max(hidden, inter) + r (gate, up) + max(inter, hidden) + r (down)
//   logits     K_f = layers K_l + 2 hidden (final norm, lm_head)
//   loss       K_f + vocab (log-sum-exp) + tokens (mean)
//   gradients  the loss's chain, back through the same ops (K_f again), + tokens (the sums
//              over tokens in dA, dB)
// A test shows the bound is tight enough to see a 1% error in the LoRA scaling.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "tests/support/compare.h"
#include "tests/support/hf_reference.h"

namespace {

using testing_support::HfReference;

const std::string kDir = std::string(ENGINE_SOURCE_DIR) + "/tests/data/hf_reference";

struct Chains {
  int64_t logits, loss, grads;
};

Chains chains(const HfReference& ref, int64_t r) {
  const models::LlamaConfig& c = ref.config;
  const int64_t seq = ref.ids.dim(1), tokens = ref.ids.numel();
  const int64_t attn = std::max(c.hidden, c.q_dim()) + r;
  const int64_t mlp = std::max(c.hidden, c.intermediate) + r;
  const int64_t layer = c.hidden + attn + c.head_dim + 2 * seq + attn + c.hidden + mlp + mlp;
  const int64_t logits = c.layers * layer + 2 * c.hidden;
  const int64_t loss = logits + c.vocab + tokens;
  return {logits, loss, loss + logits + tokens};
}

// Largest |got - ref| / tol, printed so that the margin is on record.
void report(const char* what, const std::vector<float>& got, const std::vector<float>& ref,
            const std::vector<double>& tol) {
  double worst = 0, worst_diff = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::fabs(double(got[i]) - ref[i]);
    worst_diff = std::max(worst_diff, d);
    worst = std::max(worst, d / tol[i]);
  }
  std::printf("[ measured ] %-10s max |engine - HF| %.3g, max |diff| / bound %.3g\n", what,
              worst_diff, worst);
}

using testing_support::EngineRun;
using testing_support::relative_tolerance;
constexpr double kU = testing_support::kUnitRoundoffF32;

void expect_logits_match(const HfReference& ref, const EngineRun& run, const Chains& k, bool print) {
  const std::vector<float> got = real_positions(run.logits, ref), want = real_positions(ref.logits, ref);
  const std::vector<double> tol = relative_tolerance(want, kU, 2.0 * double(k.logits) * kU);
  testing_support::expect_within(got, want, tol, "logits");
  if (print) report("logits", got, want, tol);
}

void expect_loss_matches(const HfReference& ref, const EngineRun& run, const Chains& k, bool print) {
  const std::vector<float> got{run.loss}, want{ref.loss};
  const std::vector<double> tol = relative_tolerance(want, kU, 2.0 * double(k.loss) * kU);
  testing_support::expect_within(got, want, tol, "loss");
  if (print) report("loss", got, want, tol);
}

void expect_grads_match(const HfReference& ref, const EngineRun& run, const Chains& k, bool print) {
  ASSERT_EQ(run.grads.size(), ref.grads.size());
  std::vector<float> got_all, want_all;
  std::vector<double> tol_all;
  for (const auto& [name, want] : ref.grads) {
    ASSERT_TRUE(run.grads.count(name)) << "the engine has no LoRA factor " << name;
    const std::vector<float>& got = run.grads.at(name);
    const std::vector<double> tol = relative_tolerance(want, kU, 2.0 * double(k.grads) * kU);
    testing_support::expect_within(got, want, tol, name);
    got_all.insert(got_all.end(), got.begin(), got.end());
    want_all.insert(want_all.end(), want.begin(), want.end());
    tol_all.insert(tol_all.end(), tol.begin(), tol.end());
  }
  if (print) report("LoRA grads", got_all, want_all, tol_all);
}

TEST(HfReference, FileIsWhatTheTestExpects) {
  const HfReference ref = testing_support::load_hf_reference(kDir);
  const models::LlamaConfig& c = ref.config;
  EXPECT_LT(c.kv_heads, c.heads) << "grouped-query attention";
  EXPECT_GT(c.rope.scaling_factor, 1.0f) << "llama3 RoPE scaling";
  EXPECT_EQ(ref.grads.size(), size_t(2 * 7 * c.layers)) << "A and B of seven linears per layer";
  int pads = 0;
  for (int32_t m : ref.mask) pads += m == 0;
  EXPECT_GT(pads, 0) << "the batch is padded";
  std::printf("[ reference ] written by %s\n", ref.versions.c_str());
}

TEST(HfReference, CpuMatchesHuggingFace) {
  const HfReference ref = testing_support::load_hf_reference(kDir);
  auto model = testing_support::load_engine_model(ref);
  const Chains k = chains(ref, model->layers()[0].q_proj.lora_a.dim(0));
  std::printf("[ bound ] chains: logits %lld, loss %lld, gradients %lld\n", (long long)k.logits,
              (long long)k.loss, (long long)k.grads);
  const EngineRun run = testing_support::run_engine(*model, ref);
  expect_logits_match(ref, run, k, true);
  expect_loss_matches(ref, run, k, true);
  expect_grads_match(ref, run, k, true);
}

// The bounds have teeth: LoRA alpha off by 1% moves the logits and the gradients past
// them. (Not the loss: one number, ~1e-3 relative from it, under a 3e-3 relative bound.)
TEST(HfReference, BoundCatchesOnePercentLoraScalingError) {
  const HfReference ref = testing_support::load_hf_reference(kDir);
  auto model = testing_support::load_engine_model(ref, 1.01f);
  const Chains k = chains(ref, model->layers()[0].q_proj.lora_a.dim(0));
  const EngineRun run = testing_support::run_engine(*model, ref);
  using testing_support::failures_reported;
  EXPECT_GT(failures_reported([&] { expect_logits_match(ref, run, k, false); }), 0);
  EXPECT_GT(failures_reported([&] { expect_grads_match(ref, run, k, false); }), 0);
}

}  // namespace
