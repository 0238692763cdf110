// train70b --method dpo: Direct Preference Optimization of the LoRA adapters on
// {prompt, chosen, rejected} pairs (models/preference_data.h), with the loss of
// models/dpo_loss.h. The reference policy is the same model with every adapter off
// (models/lora_scope.h): no second copy of the weights.
//
// A micro-batch of B pairs is one padded batch of 2B rows, chosen then rejected, and
// one forward with gradients through the fused per-sequence log-probs
// (LlamaModel::sequence_logprobs, op lm_head_logprobs: no [tokens, vocab] logits). The
// DPO loss of the 2B numbers is computed on the host, and backward is seeded with its
// gradient. Reference log-probs: with --precompute-ref (the default) one pass without
// gradients over every pair before training, kept on the host (two floats per pair, so
// any dataset fits; a step then costs what an SFT step on 2B sequences does); without it,
// each micro-batch adds one forward without gradients, adapters off.
// Memory per step (for the planner): activations of 2B sequences of the batch's length,
// as SFT with batch 2B, plus, without --precompute-ref, one forward of those 2B sequences
// without gradients (no saved activations: a layer's working set at a time).
//
// Metrics (metrics.jsonl and the log) use TRL's names: loss, rewards/chosen,
// rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen, logps/rejected;
// held-out pairs are evaluated before and after training.
#pragma once
#include <ostream>

#include "tools/train/options.h"
#include "tools/train/trainer.h"

namespace train {

// RunSummary's before/after hold the held-out DPO loss, rewards/accuracies as the
// accuracy, and the response tokens scored.
RunSummary run_dpo_training(const TrainOptions& options, std::ostream& log);

}  // namespace train
