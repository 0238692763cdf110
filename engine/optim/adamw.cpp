// AdamW on the CPU or on a CUDA device. The per-element update is
// kmath::adamw_update (kernels/math/adamw.h), shared with the fused CUDA kernel
// (kernels/adamw.cu, launched by engine/cuda/adamw.cpp), so both devices give bitwise
// identical parameters. The bias corrections are computed here, on the host, in double,
// once per step.
#include "engine/optim/adamw.h"

#include <cmath>
#include <map>

#include "engine/backend.h"
#include "kernels/math/adamw.h"

namespace engine::optim {

AdamW::AdamW(std::vector<Tensor> params, AdamWConfig config)
    : params_(std::move(params)), config_(config) {
  MemoryOwnerScope owner("optimizer");  // the memory report's owner (engine/allocator.h)
  for (const Tensor& p : params_) {
    ENGINE_CHECK(p.dtype() == DType::F32, "AdamW needs f32 parameters, got ", p.str());
    m_.push_back(Tensor::zeros(p.shape(), DType::F32, p.device()));
    v_.push_back(Tensor::zeros(p.shape(), DType::F32, p.device()));
  }
}

kmath::AdamWStep step_constants(const AdamWConfig& config, int64_t step) {
  const double bias1 = 1.0 - std::pow(double(config.beta1), double(step));
  const double bias2 = 1.0 - std::pow(double(config.beta2), double(step));
  kmath::AdamWStep s;
  s.lr = config.lr;
  s.beta1 = config.beta1;
  s.beta2 = config.beta2;
  s.eps = config.eps;
  s.weight_decay = config.weight_decay;
  s.step_size = static_cast<float>(config.lr / bias1);
  s.bias2_sqrt = static_cast<float>(std::sqrt(bias2));
  return s;
}

void AdamW::step() {
  ++step_;
  const kmath::AdamWStep s = step_constants(config_, step_);
  std::map<int, std::vector<size_t>> on_cuda;  // device index -> parameters
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    if (params_[i].device().is_cuda()) {
      on_cuda[params_[i].device().index].push_back(i);
      continue;
    }
    ENGINE_CHECK(g.device().is_cpu() && g.dtype() == DType::F32 && g.shape() == params_[i].shape(),
                 "AdamW: gradient ", g.str(), " does not match parameter ", params_[i].str());
    float* p = params_[i].data<float>();
    float* m = m_[i].data<float>();
    float* v = v_[i].data<float>();
    const float* gp = g.data<float>();
    for (int64_t j = 0; j < params_[i].numel(); ++j) kmath::adamw_update(p[j], gp[j], m[j], v[j], s);
  }
  for (const auto& device_params : on_cuda)
    backend::device_adamw_step(params_, m_, v_, device_params.second, s);
}

void AdamW::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

OptimizerState AdamW::state() const {
  const auto bits = static_cast<uint64_t>(step_);
  OptimizerState s{{"step", Tensor::from_ints({static_cast<int32_t>(bits & 0xffffffffu),
                                               static_cast<int32_t>(bits >> 32)}, {2})}};
  for (size_t i = 0; i < m_.size(); ++i) {
    s.emplace_back("m." + std::to_string(i), m_[i].to(Device::cpu()).clone());
    s.emplace_back("v." + std::to_string(i), v_[i].to(Device::cpu()).clone());
  }
  return s;
}

void AdamW::load_state(const OptimizerState& s) {
  ENGINE_INPUT_CHECK(s.size() == 1 + 2 * m_.size(), "optimizer state: ", s.size(), " entries, AdamW over ",
                     m_.size(), " parameters needs ", 1 + 2 * m_.size());
  ENGINE_INPUT_CHECK(s[0].first == "step" && s[0].second.dtype() == DType::I32 && s[0].second.numel() == 2,
                     "optimizer state: the first entry must be the i32 [2] step count");
  const std::vector<int32_t> bits = s[0].second.to_ints();
  const int64_t step = static_cast<int64_t>(static_cast<uint64_t>(static_cast<uint32_t>(bits[0])) |
                                            (static_cast<uint64_t>(static_cast<uint32_t>(bits[1])) << 32));
  for (size_t i = 0; i < m_.size(); ++i)
    for (int k = 0; k < 2; ++k) {
      const auto& [name, t] = s[1 + 2 * i + k];
      const std::string want = (k == 0 ? "m." : "v.") + std::to_string(i);
      ENGINE_INPUT_CHECK(name == want && t.dtype() == DType::F32 && t.shape() == m_[i].shape(),
                         "optimizer state: entry '", name, "' ", t.str(), " does not match '", want, "' ",
                         m_[i].str());
    }
  for (size_t i = 0; i < m_.size(); ++i) {
    m_[i].copy_from(s[1 + 2 * i].second);
    v_[i].copy_from(s[2 + 2 * i].second);
  }
  step_ = step;
}

float clip_grad_norm(const std::vector<Tensor>& params, float max_norm) {
  // Sum of squares in double: host gradients element by element in parameter order,
  // device gradients by one fused deterministic launch per device (one double comes
  // back, not the gradients).
  double total = 0;
  std::map<int, std::vector<Tensor>> on_device;
  for (const Tensor& p : params) {
    const Tensor& g = p.grad();
    if (!g.defined()) continue;
    ENGINE_CHECK(g.dtype() == DType::F32 || g.dtype() == DType::BF16,
                 "clip_grad_norm: gradient ", g.str(), " must be f32 or bf16");
    if (g.device().is_cuda()) on_device[g.device().index].push_back(g);
    else
      for (float x : g.to_floats()) total += double(x) * x;
  }
  for (const auto& device_grads : on_device)
    total += backend::device_sum_squares(device_grads.second);
  const float norm = static_cast<float>(std::sqrt(total));
  if (max_norm > 0 && norm > max_norm) {
    const float factor = max_norm / (norm + 1e-6f);
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
      if (g.device().is_cuda()) {
        backend::device_scale(g, factor);
        continue;
      }
      for (int64_t j = 0; j < g.numel(); ++j) g.data<float>()[j] *= factor;
    }
  }
  return norm;
}

}  // namespace engine::optim
