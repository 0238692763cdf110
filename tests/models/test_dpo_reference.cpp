// The engine's DPO on the CPU (f32) against PyTorch + transformers + peft (f32, CPU) on the
// tiny Llama of tests/data/hf_reference/ with its nonzero adapter: the adapter-off
// log-probs against the base model without peft, then for sigmoid DPO (with label
// smoothing) and IPO the reference and policy log-probs, the loss and every LoRA
// gradient (tests/data/make_dpo_reference.py wrote the expected values once).
//
// Bound (derived, as in test_hf_reference.cpp): a chain of K fp32 roundings moves a value
// by at most 2 K u (|ref| + rms ref) on top of its final rounding u |ref|, u = 2^-24.
//   log-probs   K_lp = the logits' chain + vocab (log-sum-exp) + seq (the sum over tokens)
//   loss        per pair |L'(h)| dh with dh the sum of its four log-probs' bounds; mean
//   gradients   grad = sum over rows of c_row d logp_row / dtheta, c = weight L'(h):
//               the chain of the gradient (K_lp + the logits' chain back + tokens), plus
//               the coefficients' relative error |L''(h)| dh / |L'(h)| (worst pair)
// BoundCatchesOnePercentBetaError shows the gradient bound sees a 1% change of beta (IPO: 3%).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "models/dpo_step.h"
#include "models/lora_scope.h"
#include "tests/support/compare.h"
#include "tests/support/hf_reference.h"

namespace {

const std::string kHfDir = std::string(ENGINE_SOURCE_DIR) + "/tests/data/hf_reference";
const std::string kDpoFile = std::string(ENGINE_SOURCE_DIR) + "/tests/data/dpo_reference/reference.safetensors";
constexpr double kU = testing_support::kUnitRoundoffF32;
using testing_support::relative_tolerance;

struct DpoReference {
  engine::Tensor ids, labels;
  std::vector<float> base_logps;
  double sigmoid_beta, label_smoothing, ipo_beta;
  struct Kind {
    std::vector<float> policy, ref;
    float loss;
    std::map<std::string, std::vector<float>> grads;
  } sigmoid, ipo;
};

DpoReference load_dpo_reference() {
  engine::io::SafetensorsFile f(kDpoFile);
  DpoReference r;
  r.ids = f.load("input_ids");
  r.labels = f.load("labels");
  r.base_logps = f.load("base.logps").to_floats();
  const std::vector<float> c = f.load("config").to_floats();
  r.sigmoid_beta = c.at(0), r.label_smoothing = c.at(1), r.ipo_beta = c.at(2);
  for (auto [kind, name] : {std::pair{&r.sigmoid, "sigmoid"}, std::pair{&r.ipo, "ipo"}}) {
    const std::string p = name;
    kind->policy = f.load(p + ".policy").to_floats();
    kind->ref = f.load(p + ".ref").to_floats();
    kind->loss = f.load(p + ".loss").to_floats().at(0);
    for (const std::string& n : f.names())
      if (n.rfind(p + ".grad.", 0) == 0) kind->grads[n.substr(p.size() + 6)] = f.load(n).to_floats();
  }
  return r;
}

struct Chains {
  int64_t logits, logps, grads;
};

Chains chains(const testing_support::HfReference& hf, int64_t r, int64_t seq, int64_t tokens) {
  const models::LlamaConfig& c = hf.config;
  const int64_t attn = std::max(c.hidden, c.q_dim()) + r;
  const int64_t mlp = std::max(c.hidden, c.intermediate) + r;
  const int64_t layer = c.hidden + attn + c.head_dim + 2 * seq + attn + c.hidden + mlp + mlp;
  const int64_t logits = c.layers * layer + 2 * c.hidden;
  const int64_t logps = logits + c.vocab + seq;
  return {logits, logps, logps + logits + tokens};
}

void report(const char* what, const std::vector<float>& got, const std::vector<float>& want,
            const std::vector<double>& tol) {
  double worst = 0, diff = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(double(got[i]) - want[i]);
    diff = std::max(diff, d);
    worst = std::max(worst, d / tol[i]);
  }
  std::printf("[ measured ] %-16s max |engine - torch| %.3g, max |diff| / bound %.3g\n", what, diff, worst);
}

std::vector<float> engine_logps(models::LlamaModel& model, const DpoReference& d, bool mean, bool off) {
  engine::NoGradGuard no_grad;
  std::optional<models::LoraDisabledScope> scope;
  if (off) scope.emplace(model);
  return model.sequence_logprobs(d.ids, d.labels, {}, mean).to_floats();
}

// One loss kind: log-probs, loss and gradients against the reference; `beta_factor`
// scales the engine's beta (1 for the real test).
void check_kind(models::LlamaModel& model, const testing_support::HfReference& hf, const DpoReference& d,
                models::DpoLossType type, double beta_factor, bool print) {
  const bool ipo = type == models::DpoLossType::Ipo;
  const DpoReference::Kind& want = ipo ? d.ipo : d.sigmoid;
  models::DpoConfig cfg{type, (ipo ? d.ipo_beta : d.sigmoid_beta) * beta_factor, ipo ? 0.0 : d.label_smoothing};
  const int64_t rows = d.ids.dim(0), seq = d.ids.dim(1), pairs = rows / 2;
  const Chains k = chains(hf, model.layers()[0].q_proj.lora_a.dim(0), seq, d.ids.numel());
  const std::vector<double> lp_tol = relative_tolerance(want.ref, kU, 2.0 * double(k.logps) * kU);

  const std::vector<float> ref = engine_logps(model, d, ipo, true);
  testing_support::expect_within(ref, want.ref, lp_tol, "reference log-probs");
  if (print) report(ipo ? "ipo ref logps" : "sigmoid ref logps", ref, want.ref, lp_tol);

  for (auto& [name, t] : model.lora_parameters()) t.set_grad(engine::Tensor());
  models::Batch batch{d.ids, d.labels, 0};
  const std::vector<double> ref_d(ref.begin(), ref.end());
  const models::DpoMetrics sums = models::dpo_backward(model, batch, ref_d, cfg, {}, 1.0 / pairs);
  const std::vector<float> got_loss{static_cast<float>(sums.loss / pairs)}, want_loss{want.loss};

  // Loss and coefficient bounds from the reference's own values.
  const std::vector<double> pol_tol = relative_tolerance(want.policy, kU, 2.0 * double(k.logps) * kU);
  double loss_tol = kU * std::fabs(want.loss), coef_rel = 0;
  for (int64_t j = 0; j < pairs; ++j) {
    const double dh = pol_tol[j] + pol_tol[pairs + j] + lp_tol[j] + lp_tol[pairs + j];
    const models::DpoPair p =
        models::dpo_pair(cfg, want.policy[j], want.policy[pairs + j], want.ref[j], want.ref[pairs + j]);
    const double h = (want.policy[j] - want.ref[j]) - (want.policy[pairs + j] - want.ref[pairs + j]);
    const double bh = cfg.beta * h;
    const double second = ipo ? 2.0 : cfg.beta * cfg.beta / ((1 + std::exp(bh)) * (1 + std::exp(-bh)));
    loss_tol += std::fabs(p.dloss_dchosen) * dh / pairs;
    coef_rel = std::max(coef_rel, second * dh / std::fabs(p.dloss_dchosen));
  }
  testing_support::expect_within(got_loss, want_loss, {loss_tol}, "loss");
  if (print) report(ipo ? "ipo loss" : "sigmoid loss", got_loss, want_loss, {loss_tol});

  std::vector<float> got_all, want_all;
  std::vector<double> tol_all;
  ASSERT_EQ(model.lora_parameters().size(), want.grads.size());
  for (auto& [name, t] : model.lora_parameters()) {
    ASSERT_TRUE(want.grads.count(name)) << name;
    const std::vector<float>& w = want.grads.at(name);
    const std::vector<float> g = t.grad().to_floats();
    const std::vector<double> tol = relative_tolerance(w, kU, 2.0 * double(k.grads) * kU + coef_rel);
    testing_support::expect_within(g, w, tol, name);
    got_all.insert(got_all.end(), g.begin(), g.end());
    want_all.insert(want_all.end(), w.begin(), w.end());
    tol_all.insert(tol_all.end(), tol.begin(), tol.end());
  }
  if (print) report(ipo ? "ipo LoRA grads" : "sigmoid LoRA grads", got_all, want_all, tol_all);
}

TEST(DpoReference, AdapterOffIsTheBaseModel) {
  const testing_support::HfReference hf = testing_support::load_hf_reference(kHfDir);
  auto model = testing_support::load_engine_model(hf);
  const DpoReference d = load_dpo_reference();
  const Chains k = chains(hf, model->layers()[0].q_proj.lora_a.dim(0), d.ids.dim(1), d.ids.numel());
  const std::vector<double> tol = relative_tolerance(d.base_logps, kU, 2.0 * double(k.logps) * kU);
  const std::vector<float> off = engine_logps(*model, d, false, true);
  testing_support::expect_within(off, d.base_logps, tol, "adapter-off log-probs vs the base model");
  report("base logps", off, d.base_logps, tol);
  // With the adapter on they are the policy's, far from the base's.
  const std::vector<float> on = engine_logps(*model, d, false, false);
  EXPECT_GT(std::fabs(on[0] - d.base_logps[0]), 100 * tol[0]);
}

TEST(DpoReference, CpuLossAndLoraGradientsMatchPytorch) {
  const testing_support::HfReference hf = testing_support::load_hf_reference(kHfDir);
  auto model = testing_support::load_engine_model(hf);
  const DpoReference d = load_dpo_reference();
  check_kind(*model, hf, d, models::DpoLossType::Sigmoid, 1.0, true);
  check_kind(*model, hf, d, models::DpoLossType::Ipo, 1.0, true);
}

TEST(DpoReference, BoundCatchesOnePercentBetaError) {
  const testing_support::HfReference hf = testing_support::load_hf_reference(kHfDir);
  auto model = testing_support::load_engine_model(hf);
  const DpoReference d = load_dpo_reference();
  using testing_support::failures_reported;
  EXPECT_GT(failures_reported([&] { check_kind(*model, hf, d, models::DpoLossType::Sigmoid, 1.01, false); }), 0);
  // IPO's beta only sets the target 1 / (2 beta) of h: 1% of beta moves its gradients by
  // about 2/3 of their bound (measured), 3% past it.
  EXPECT_GT(failures_reported([&] { check_kind(*model, hf, d, models::DpoLossType::Ipo, 1.03, false); }), 0);
}

}  // namespace
