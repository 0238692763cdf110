// LlamaModel::eval_stats: the held-out evaluation's per-token loss and greedy prediction,
// fused with the lm_head (engine::lm_head_eval), so the [batch * seq, vocab] logits never
// exist.
#include "engine/autograd.h"
#include "engine/lm_head_eval.h"
#include "engine/ops.h"
#include "models/llama.h"

namespace models {

using engine::Tensor;

std::pair<Tensor, Tensor> LlamaModel::eval_stats(const Tensor& ids, const Tensor& labels,
                                                 const ForwardOptions& options) const {
  ENGINE_CHECK(labels.shape() == ids.shape() && ids.rank() == 2, "labels ", labels.str(),
               " do not match ids ", ids.str());
  ENGINE_CHECK(!options.positions.defined(), "eval_stats takes one sequence per row (no packing)");
  engine::NoGradGuard no_grad;
  ForwardOptions o = options;
  o.train = false;
  o.checkpoint_layers = false;
  o.offload_checkpoints = false;
  const int64_t batch = ids.dim(0), seq = ids.dim(1);
  Tensor h = hidden_states(ids, o);
  // Position t predicts token t+1: the targets are the labels shifted left by one.
  const std::vector<int32_t> lab = labels.to_ints();
  std::vector<int32_t> shifted(lab.size(), -100);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t + 1 < seq; ++t) shifted[b * seq + t] = lab[b * seq + t + 1];
  Tensor targets = Tensor::from_ints(shifted, {batch * seq});
  if (!h.device().is_cpu()) targets = targets.to(h.device());
  engine::LmHeadEval r = engine::lm_head_eval(engine::ops::reshape(h, {batch * seq, config_.hidden}),
                                              lm_head_, targets, -100);
  return {r.loss, r.argmax};
}

}  // namespace models
