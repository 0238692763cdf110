#include "models/dpo_step.h"

#include "engine/autograd.h"
#include "engine/nvtx.h"

namespace models {

using engine::Tensor;

DpoMetrics dpo_backward(const LlamaModel& model, const Batch& batch, const std::vector<double>& ref,
                        const DpoConfig& config, const ForwardOptions& options, double weight) {
  const int64_t rows = batch.ids.dim(0), b = rows / 2;
  ENGINE_CHECK(rows % 2 == 0 && static_cast<int64_t>(ref.size()) == rows, "a DPO batch of ", rows,
               " rows with ", ref.size(), " reference log-probs is not chosen + rejected of B pairs");
  Tensor policy;
  {
    engine::NvtxRange range("forward");
    policy = model.sequence_logprobs(batch.ids, batch.labels, options, config.average_logprobs());
  }
  const std::vector<float> lp = policy.to_floats();
  std::vector<float> seed(static_cast<size_t>(rows));
  DpoMetrics sums;
  for (int64_t j = 0; j < b; ++j) {
    const DpoPair p = dpo_pair(config, lp[j], lp[b + j], ref[j], ref[b + j]);
    seed[j] = static_cast<float>(weight * p.dloss_dchosen);
    seed[b + j] = static_cast<float>(weight * p.dloss_drejected);
    sums.add(p, lp[j], lp[b + j]);
  }
  Tensor seed_tensor = Tensor::from_floats(seed, {rows});
  if (!policy.device().is_cpu()) seed_tensor = seed_tensor.to(policy.device());
  engine::backward({policy}, {seed_tensor});
  return sums;
}

}  // namespace models
