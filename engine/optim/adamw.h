// AdamW with PyTorch semantics (torch.optim.AdamW, decoupled weight decay):
//   p <- p - lr * wd * p
//   m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2
//   m^ = m / (1 - b1^t)             v^ = v / (1 - b2^t)
//   p <- p - lr * m^ / (sqrt(v^) + eps)
// States are fp32 and live beside the parameter. clip_grad_norm scales all
// gradients by max_norm / total_norm when the global L2 norm exceeds max_norm.
#pragma once
#include <vector>

#include "engine/optim/optimizer.h"
#include "engine/tensor.h"
#include "kernels/math/adamw.h"

namespace engine::optim {

struct AdamWConfig {
  float lr = 1e-4f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
};

// The constants of update number `step` (1-based) that every element shares: the bias
// corrections computed in double, then rounded (AdamW and the paged variants alike).
kmath::AdamWStep step_constants(const AdamWConfig& config, int64_t step);

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, AdamWConfig config);
  // One update from the parameters' current .grad (parameters without one are skipped).
  void step() override;
  void zero_grad() override;
  void set_lr(float lr) override { config_.lr = lr; }
  int64_t steps() const override { return step_; }
  const std::vector<Tensor>& params() const override { return params_; }
  std::string kind() const override { return "adamw"; }
  // "step" (i32 [2]: low and high 32 bits), then "m.<i>" and "v.<i>" per parameter.
  OptimizerState state() const override;
  void load_state(const OptimizerState& state) override;
  // Moment tensors, for checkpointing the optimizer.
  std::vector<Tensor>& first_moments() { return m_; }
  std::vector<Tensor>& second_moments() { return v_; }

 private:
  std::vector<Tensor> params_, m_, v_;
  AdamWConfig config_;
  int64_t step_ = 0;
};

// Returns the global L2 norm before clipping.
float clip_grad_norm(const std::vector<Tensor>& params, float max_norm);

}  // namespace engine::optim
