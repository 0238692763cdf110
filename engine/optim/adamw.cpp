#include "engine/optim/adamw.h"

#include <cmath>

namespace engine::optim {

AdamW::AdamW(std::vector<Tensor> params, AdamWConfig config)
    : params_(std::move(params)), config_(config) {
  for (const Tensor& p : params_) {
    ENGINE_CHECK(p.dtype() == DType::F32 && p.device().is_cpu(),
                 "AdamW on the cpu needs f32 cpu parameters, got ", p.str());
    m_.push_back(Tensor::zeros(p.shape()));
    v_.push_back(Tensor::zeros(p.shape()));
  }
}

void AdamW::step() {
  ++step_;
  const double bias1 = 1.0 - std::pow(double(config_.beta1), double(step_));
  const double bias2 = 1.0 - std::pow(double(config_.beta2), double(step_));
  const float step_size = static_cast<float>(config_.lr / bias1);
  const float bias2_sqrt = static_cast<float>(std::sqrt(bias2));
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    float* p = params_[i].data<float>();
    float* m = m_[i].data<float>();
    float* v = v_[i].data<float>();
    const float* gp = g.data<float>();
    for (int64_t j = 0; j < params_[i].numel(); ++j) {
      p[j] *= 1.0f - config_.lr * config_.weight_decay;
      m[j] = config_.beta1 * m[j] + (1.0f - config_.beta1) * gp[j];
      v[j] = config_.beta2 * v[j] + (1.0f - config_.beta2) * gp[j] * gp[j];
      // PyTorch's form: denom = sqrt(v) / sqrt(bias2) + eps.
      float denom = std::sqrt(v[j]) / bias2_sqrt + config_.eps;
      p[j] -= step_size * m[j] / denom;
    }
  }
}

void AdamW::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

float clip_grad_norm(const std::vector<Tensor>& params, float max_norm) {
  double total = 0;
  for (const Tensor& p : params) {
    if (!p.grad().defined()) continue;
    for (float g : p.grad().to_floats()) total += double(g) * g;
  }
  float norm = static_cast<float>(std::sqrt(total));
  if (max_norm > 0 && norm > max_norm) {
    float factor = max_norm / (norm + 1e-6f);
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
      for (int64_t j = 0; j < g.numel(); ++j) g.data<float>()[j] *= factor;
    }
  }
  return norm;
}

}  // namespace engine::optim
