// LlamaModel's DPO pieces: per-sequence log-probabilities of the labels, and the switch
// that turns the LoRA adapters off for the reference pass (models/lora_scope.h).
#include "engine/ops.h"
#include "models/llama.h"

namespace models {

using engine::Tensor;
constexpr int kLogprobIgnore = -100;  // labels not scored (HF convention)
namespace ops = engine::ops;

Tensor LlamaModel::sequence_logprobs(const Tensor& ids, const Tensor& labels,
                                     const ForwardOptions& o, bool mean) const {
  ENGINE_CHECK(labels.shape() == ids.shape() && ids.rank() == 2, "labels ", labels.str(),
               " do not match ids ", ids.str());
  ENGINE_CHECK(!o.positions.defined(), "sequence_logprobs takes one sequence per row (no packing)");
  const int64_t batch = ids.dim(0), seq = ids.dim(1);
  Tensor h = hidden_states(ids, o);
  // Position t predicts token t+1: the targets are the labels shifted left by one.
  const std::vector<int32_t> lab = labels.to_ints();
  std::vector<int32_t> shifted(lab.size(), kLogprobIgnore);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t + 1 < seq; ++t) shifted[b * seq + t] = lab[b * seq + t + 1];
  Tensor targets = Tensor::from_ints(shifted, {batch * seq});
  if (!h.device().is_cpu()) targets = targets.to(h.device());
  return ops::lm_head_logprobs(ops::reshape(h, {batch * seq, config_.hidden}), lm_head_, targets,
                               seq, mean, kLogprobIgnore);
}

void LlamaModel::set_lora_enabled(bool enabled) {
  for (LlamaLayer& l : layers_)
    for (Linear* lin : l.linears()) lin->lora_enabled = enabled;
}

bool LlamaModel::lora_enabled() const {
  for (const LlamaLayer& l : layers_)
    for (const Linear* lin : l.linears())
      if (lin->adapted()) return lin->lora_enabled;
  return true;
}

}  // namespace models
