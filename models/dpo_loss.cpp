#include "models/dpo_loss.h"

#include <cmath>

#include "engine/error.h"

namespace models {

namespace {

// log sigmoid(x) without overflow: -log1p(exp(-x)) for x >= 0, x - log1p(exp(x)) below.
double log_sigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }
double sigmoid(double x) {
  return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x));
}

}  // namespace

DpoLossType parse_dpo_loss(const std::string& name) {
  if (name == "sigmoid") return DpoLossType::Sigmoid;
  if (name == "ipo") return DpoLossType::Ipo;
  throw engine::InputError("'" + name + "' is not a DPO loss (sigmoid, ipo)");
}

DpoPair dpo_pair(const DpoConfig& c, double pc, double pr, double rc, double rr) {
  const double h = (pc - rc) - (pr - rr);
  DpoPair p;
  double dh;  // dloss/dh
  if (c.type == DpoLossType::Ipo) {
    const double d = h - 1 / (2 * c.beta);
    p.loss = d * d;
    dh = 2 * d;
  } else {
    const double e = c.label_smoothing, bh = c.beta * h;
    p.loss = -(1 - e) * log_sigmoid(bh) - e * log_sigmoid(-bh);
    // d/dx log sigmoid(x) = sigmoid(-x)
    dh = -(1 - e) * c.beta * sigmoid(-bh) + e * c.beta * sigmoid(bh);
  }
  p.dloss_dchosen = dh;
  p.dloss_drejected = -dh;
  p.reward_chosen = c.beta * (pc - rc);
  p.reward_rejected = c.beta * (pr - rr);
  return p;
}

void DpoMetrics::add(const DpoPair& p, double policy_chosen, double policy_rejected) {
  loss += p.loss;
  reward_chosen += p.reward_chosen;
  reward_rejected += p.reward_rejected;
  accuracy += p.reward_chosen > p.reward_rejected ? 1.0 : 0.0;
  margin += p.reward_chosen - p.reward_rejected;
  logp_chosen += policy_chosen;
  logp_rejected += policy_rejected;
  ++pairs;
}

void DpoMetrics::merge(const DpoMetrics& s) {
  loss += s.loss;
  reward_chosen += s.reward_chosen;
  reward_rejected += s.reward_rejected;
  accuracy += s.accuracy;
  margin += s.margin;
  logp_chosen += s.logp_chosen;
  logp_rejected += s.logp_rejected;
  pairs += s.pairs;
}

DpoMetrics DpoMetrics::mean() const {
  DpoMetrics m = *this;
  if (pairs == 0) return m;
  for (double* v : {&m.loss, &m.reward_chosen, &m.reward_rejected, &m.accuracy, &m.margin,
                    &m.logp_chosen, &m.logp_rejected})
    *v /= static_cast<double>(pairs);
  return m;
}

}  // namespace models
