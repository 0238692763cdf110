// AdamW on the CPU or on a CUDA device. The per-element update is
// kmath::adamw_update (kernels/math/adamw.h), shared with the fused CUDA kernel
// (kernels/adamw.cu), so both devices give bitwise identical parameters. The bias
// corrections are computed here, on the host, in double, once per step.
#include "engine/optim/adamw.h"

#include <cmath>
#include <cstring>
#include <map>

#include "kernels/math/adamw.h"

#if ENGINE_WITH_CUDA
#include "engine/cuda/op_helpers.h"
#include "engine/cuda/runtime.h"
#include "kernels/adamw.h"
#include "kernels/elementwise.h"
#include "kernels/grad_norm.h"
#endif

namespace engine::optim {

namespace {

#if ENGINE_WITH_CUDA
// Sum of squares of gradients on one device: one fused launch, one double copied back.
double device_sum_squares(const std::vector<Tensor>& grads, Device device) {
  std::vector<kernels::SquaresTensor> list;
  for (const Tensor& g : grads)
    list.push_back({g.raw_data(), cuda_ops::elem_type(g.dtype()), g.numel()});
  const int n = static_cast<int>(list.size());
  Tensor workspace = Tensor::empty(
      {static_cast<int64_t>(kernels::sum_squares_workspace_bytes(list.data(), n))}, DType::U8,
      device);
  Tensor result = Tensor::empty({8}, DType::U8, device);
  kernels::sum_squares(list.data(), n, reinterpret_cast<double*>(result.raw_data()),
                       workspace.raw_data(), workspace.nbytes(), cuda::current_stream());
  const Tensor host = result.to(Device::cpu());
  double total = 0;
  std::memcpy(&total, host.raw_data(), sizeof total);
  return total;
}

// One fused launch over every CUDA parameter of one device that has a gradient.
void step_cuda(const std::vector<Tensor>& params, std::vector<Tensor>& m,
               std::vector<Tensor>& v, const std::vector<size_t>& indices,
               const kmath::AdamWStep& s, Device device) {
  std::vector<kernels::AdamWTensor> list;
  std::vector<Tensor> keep;  // gradients converted to f32 stay alive until the launch is queued
  for (size_t i : indices) {
    Tensor g = params[i].grad();
    ENGINE_CHECK(g.device() == device && g.shape() == params[i].shape(), "AdamW: gradient ",
                 g.str(), " does not match parameter ", params[i].str());
    if (g.dtype() != DType::F32) keep.push_back(g = g.to_dtype(DType::F32));
    list.push_back({params[i].data<float>(), g.data<float>(), m[i].data<float>(),
                    v[i].data<float>(), params[i].numel()});
  }
  const int n = static_cast<int>(list.size());
  // The caching allocator is stream-ordered: freeing the workspace after queueing is safe.
  Tensor workspace = Tensor::empty({static_cast<int64_t>(kernels::adamw_workspace_bytes(n))},
                                   DType::U8, device);
  kernels::adamw_step(list.data(), n, s, workspace.raw_data(), workspace.nbytes(),
                      cuda::current_stream());
}
#endif

}  // namespace

AdamW::AdamW(std::vector<Tensor> params, AdamWConfig config)
    : params_(std::move(params)), config_(config) {
  for (const Tensor& p : params_) {
    ENGINE_CHECK(p.dtype() == DType::F32, "AdamW needs f32 parameters, got ", p.str());
    ENGINE_CHECK(p.device().is_cpu() || ENGINE_WITH_CUDA, "AdamW: ", p.str(),
                 " is on a device this build does not support");
    m_.push_back(Tensor::zeros(p.shape(), DType::F32, p.device()));
    v_.push_back(Tensor::zeros(p.shape(), DType::F32, p.device()));
  }
}

void AdamW::step() {
  ++step_;
  const double bias1 = 1.0 - std::pow(double(config_.beta1), double(step_));
  const double bias2 = 1.0 - std::pow(double(config_.beta2), double(step_));
  kmath::AdamWStep s;
  s.lr = config_.lr;
  s.beta1 = config_.beta1;
  s.beta2 = config_.beta2;
  s.eps = config_.eps;
  s.weight_decay = config_.weight_decay;
  s.step_size = static_cast<float>(config_.lr / bias1);
  s.bias2_sqrt = static_cast<float>(std::sqrt(bias2));
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
#if ENGINE_WITH_CUDA
  for (const auto& [index, indices] : on_cuda)
    step_cuda(params_, m_, v_, indices, s, Device::cuda(index));
#endif
}

void AdamW::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
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
#if ENGINE_WITH_CUDA
  for (const auto& [index, grads] : on_device) total += device_sum_squares(grads, Device::cuda(index));
#endif
  const float norm = static_cast<float>(std::sqrt(total));
  if (max_norm > 0 && norm > max_norm) {
    const float factor = max_norm / (norm + 1e-6f);
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
#if ENGINE_WITH_CUDA
      if (g.device().is_cuda()) {
        kernels::scale(g.raw_data(), g.raw_data(), factor, cuda_ops::elem_type(g.dtype()),
                       g.numel(), cuda::current_stream());
        continue;
      }
#endif
      for (int64_t j = 0; j < g.numel(); ++j) g.data<float>()[j] *= factor;
    }
  }
  return norm;
}

}  // namespace engine::optim
