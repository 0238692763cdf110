// One DPO micro-batch on a model: B pairs as one padded batch of 2B rows (the chosen
// sides, then the rejected sides), the policy's per-sequence log-probs with gradients
// (LlamaModel::sequence_logprobs), the loss of models/dpo_loss.h on the host, and
// backward seeded with weight x dloss/dlogp: the LoRA factors' .grad accumulate
// weight x d(sum of the pairs' losses). The trainer passes weight = 1 / pairs per step.
#pragma once
#include <vector>

#include "models/dataset.h"
#include "models/dpo_loss.h"
#include "models/llama.h"

namespace models {

// ref: the reference log-probs of the 2B rows, in the batch's order. Returns the
// metric sums of the B pairs (DpoMetrics::mean() gives TRL's averages).
DpoMetrics dpo_backward(const LlamaModel& model, const Batch& batch, const std::vector<double>& ref,
                        const DpoConfig& config, const ForwardOptions& options, double weight);

}  // namespace models
