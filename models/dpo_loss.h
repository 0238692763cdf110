// The DPO objective on per-sequence log-probabilities (Rafailov et al. 2023; TRL's
// DPOTrainer names and conventions). For a pair with policy log-probs pi_c, pi_r of the
// chosen and rejected responses and reference log-probs ref_c, ref_r (the same model,
// adapters off):
//   h = (pi_c - ref_c) - (pi_r - ref_r)
//   sigmoid   loss = -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h)
//             (e = label smoothing, conservative DPO; log-probs summed over response tokens)
//   ipo       loss = (h - 1 / (2 beta))^2   (log-probs averaged over response tokens)
//   rewards   chosen = beta (pi_c - ref_c), rejected = beta (pi_r - ref_r); accuracy is
//             chosen > rejected; margin = chosen - rejected
// A batch's loss is the mean over its pairs. The gradient goes back through the policy
// log-probs only (the reference has none): dloss/dpi_c = L'(h), dloss/dpi_r = -L'(h).
// Double precision, on the host: a pair is four numbers.
#pragma once
#include <cstdint>
#include <string>

namespace models {

enum class DpoLossType { Sigmoid, Ipo };
DpoLossType parse_dpo_loss(const std::string& name);  // "sigmoid" | "ipo"; InputError otherwise

struct DpoConfig {
  DpoLossType type = DpoLossType::Sigmoid;
  double beta = 0.1;
  double label_smoothing = 0.0;
  // IPO scores average log-probs per response token, sigmoid DPO their sums.
  bool average_logprobs() const { return type == DpoLossType::Ipo; }
};

struct DpoPair {
  double loss = 0;
  double dloss_dchosen = 0, dloss_drejected = 0;  // w.r.t. the policy log-probs
  double reward_chosen = 0, reward_rejected = 0;
};

DpoPair dpo_pair(const DpoConfig& c, double policy_chosen, double policy_rejected,
                 double ref_chosen, double ref_rejected);

// Means over pairs under TRL's metric names (rewards/chosen, rewards/rejected,
// rewards/accuracies, rewards/margins, logps/chosen, logps/rejected, loss).
struct DpoMetrics {
  double loss = 0, reward_chosen = 0, reward_rejected = 0, accuracy = 0, margin = 0;
  double logp_chosen = 0, logp_rejected = 0;
  int64_t pairs = 0;
  void add(const DpoPair& p, double policy_chosen, double policy_rejected);  // running sums
  void merge(const DpoMetrics& sums);                                        // running sums
  DpoMetrics mean() const;                                                   // sums / pairs
};

}  // namespace models
