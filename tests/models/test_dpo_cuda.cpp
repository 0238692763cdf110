// DPO on the CUDA path against the CPU reference (gpu label; runs in the SIMT build): the
// tiny Llama of tests/data/hf_reference/ with its nonzero adapter, in f32 on both devices,
// one sigmoid-DPO micro-batch (reference pass with the adapters off, then the policy's
// log-probs, loss and backward through the fused op lm_head_logprobs): the reference and
// policy log-probs and every LoRA gradient.
//
// Bound: both sides evaluate the same f32 function in different orders, so each value is
// within u |ref| + 2 K u (|ref| + rms ref) of the other (K the chain of roundings behind
// it, as in test_dpo_reference.cpp: log-probs K = the logits' chain + vocab + seq, the
// gradients that chain again back + tokens), doubled because both sides round.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

#include "engine/autograd.h"
#include "models/dpo_step.h"
#include "models/lora_scope.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"
#include "tests/support/hf_reference.h"

namespace {

constexpr double kU = testing_support::kUnitRoundoffF32;

struct Side {
  std::vector<float> ref, policy;
  std::map<std::string, std::vector<float>> grads;
};

Side run(models::LlamaModel& model, const engine::Tensor& ids, const engine::Tensor& labels) {
  Side s;
  {
    engine::NoGradGuard no_grad;
    models::LoraDisabledScope off(model);
    s.ref = model.sequence_logprobs(ids, labels).to_floats();
  }
  {
    engine::NoGradGuard no_grad;
    s.policy = model.sequence_logprobs(ids, labels).to_floats();
  }
  const models::DpoConfig cfg{models::DpoLossType::Sigmoid, 0.5, 0.1};
  models::dpo_backward(model, models::Batch{ids, labels, 0}, std::vector<double>(s.ref.begin(), s.ref.end()),
                       cfg, {}, 0.5);
  for (auto& [name, t] : model.lora_parameters()) s.grads[name] = t.grad().to_floats();
  return s;
}

TEST(DpoCuda, F32MatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  const testing_support::HfReference hf =
      testing_support::load_hf_reference(std::string(ENGINE_SOURCE_DIR) + "/tests/data/hf_reference");
  // 2 pairs from the reference batch's rows (prompt labels -100 included): rows as chosen
  // 0, 1 and rejected 0, 1 (the rows repeated in the other order).
  const std::vector<int32_t> ids = hf.ids.to_ints(), labels = hf.labels.to_ints();
  const int64_t seq = hf.ids.dim(1);
  std::vector<int32_t> ids4, labels4;
  for (int row : {0, 1, 1, 0}) {
    ids4.insert(ids4.end(), ids.begin() + row * seq, ids.begin() + (row + 1) * seq);
    labels4.insert(labels4.end(), labels.begin() + row * seq, labels.begin() + (row + 1) * seq);
  }
  const engine::Tensor id_t = engine::Tensor::from_ints(ids4, {4, seq});
  const engine::Tensor label_t = engine::Tensor::from_ints(labels4, {4, seq});

  auto cpu_model = testing_support::load_engine_model(hf);
  auto gpu_model = testing_support::load_engine_model(hf);
  gpu_model->to(engine::Device::cuda(), engine::DType::F32);
  const Side cpu = run(*cpu_model, id_t, label_t);
  const Side gpu = run(*gpu_model, id_t, label_t);

  const models::LlamaConfig& c = hf.config;
  const int64_t r = cpu_model->layers()[0].q_proj.lora_a.dim(0);
  const int64_t attn = std::max(c.hidden, c.q_dim()) + r, mlp = std::max(c.hidden, c.intermediate) + r;
  const int64_t logits = c.layers * (c.hidden + 2 * attn + c.head_dim + 2 * seq + c.hidden + 2 * mlp) + 2 * c.hidden;
  const int64_t k_logps = logits + c.vocab + seq, k_grads = k_logps + logits + 4 * seq;
  using testing_support::relative_tolerance;
  testing_support::expect_within(gpu.ref, cpu.ref, relative_tolerance(cpu.ref, kU, 4.0 * k_logps * kU),
                                 "reference log-probs");
  testing_support::expect_within(gpu.policy, cpu.policy,
                                 relative_tolerance(cpu.policy, kU, 4.0 * k_logps * kU), "policy log-probs");
  // The loss coefficients come from the log-probs: relative error |L''(h)| dh / |L'(h)|.
  const models::DpoConfig cfg{models::DpoLossType::Sigmoid, 0.5, 0.1};
  const std::vector<double> ref_tol = relative_tolerance(cpu.ref, kU, 4.0 * k_logps * kU),
                            pol_tol = relative_tolerance(cpu.policy, kU, 4.0 * k_logps * kU);
  double coef_rel = 0;
  for (int j = 0; j < 2; ++j) {
    const double dh = ref_tol[j] + ref_tol[2 + j] + pol_tol[j] + pol_tol[2 + j];
    const double h = (cpu.policy[j] - cpu.ref[j]) - (cpu.policy[2 + j] - cpu.ref[2 + j]), bh = cfg.beta * h;
    const double second = cfg.beta * cfg.beta / ((1 + std::exp(bh)) * (1 + std::exp(-bh)));
    const models::DpoPair p = models::dpo_pair(cfg, cpu.policy[j], cpu.policy[2 + j], cpu.ref[j], cpu.ref[2 + j]);
    coef_rel = std::max(coef_rel, second * dh / std::fabs(p.dloss_dchosen));
  }
  ASSERT_EQ(gpu.grads.size(), cpu.grads.size());
  for (const auto& [name, want] : cpu.grads)
    testing_support::expect_within(gpu.grads.at(name), want,
                                   relative_tolerance(want, kU, 4.0 * k_grads * kU + coef_rel), name);
}

}  // namespace
