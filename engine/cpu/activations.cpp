// CPU reference: silu, swiglu, softmax (per-element math in kernels/math/activations.h,
// shared with the CUDA kernels).
//   silu:    y = x * sigmoid(x);            dx = g * silu'(x)
//   swiglu:  y = silu(gate) * up;           dgate = g * up * silu'(gate), dup = g * silu(gate)
//   softmax: y = e^(x - max) / sum e^(x - max) over the last dim;
//            dx = y * (g - sum(g * y))
#include <cmath>

#include "engine/cpu/ops.h"
#include "kernels/math/activations.h"

namespace engine::cpu {

std::vector<Tensor> silu_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  require_f32(in[0], "silu", "x");
  Tensor y = Tensor::empty(in[0].shape());
  const float* xp = in[0].data<float>();
  for (int64_t i = 0; i < y.numel(); ++i) y.data<float>()[i] = kmath::silu(xp[i]);
  ctx.save({in[0]});
  return {y};
}

std::vector<Tensor> silu_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor& x = ctx.saved[0];
  const Tensor g = grad_or_zeros(grad_out[0], x.shape());
  Tensor dx = Tensor::empty(x.shape());
  const float *xp = x.data<float>(), *gp = g.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) dx.data<float>()[i] = gp[i] * kmath::silu_grad(xp[i]);
  return {dx};
}

std::vector<Tensor> swiglu_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &gate = in[0], &up = in[1];
  require_f32(gate, "swiglu", "gate");
  require_f32(up, "swiglu", "up");
  ENGINE_CHECK(gate.shape() == up.shape(), "swiglu: gate ", gate.shape().str(), " and up ",
               up.shape().str(), " differ");
  Tensor y = Tensor::empty(gate.shape());
  const float *gp = gate.data<float>(), *up_p = up.data<float>();
  for (int64_t i = 0; i < y.numel(); ++i) y.data<float>()[i] = kmath::swiglu(gp[i], up_p[i]);
  ctx.save({gate, up});
  return {y};
}

std::vector<Tensor> swiglu_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &gate = ctx.saved[0], &up = ctx.saved[1];
  const Tensor g = grad_or_zeros(grad_out[0], gate.shape());
  const float *gatep = gate.data<float>(), *up_p = up.data<float>(), *gp = g.data<float>();
  Tensor dgate, dup;
  if (ctx.wants_grad(0)) {
    dgate = Tensor::empty(gate.shape());
    for (int64_t i = 0; i < gate.numel(); ++i)
      dgate.data<float>()[i] = gp[i] * kmath::swiglu_grad_gate(gatep[i], up_p[i]);
  }
  if (ctx.wants_grad(1)) {
    dup = Tensor::empty(up.shape());
    for (int64_t i = 0; i < up.numel(); ++i)
      dup.data<float>()[i] = gp[i] * kmath::swiglu_grad_up(gatep[i]);
  }
  return {dgate, dup};
}

std::vector<Tensor> softmax_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor& x = in[0];
  require_f32(x, "softmax", "x");
  ENGINE_CHECK(x.rank() >= 1 && x.shape().last() > 0, "softmax: x must be [..., D], got ",
               x.shape().str());
  const int64_t d = x.shape().last(), rows = x.shape().rows();
  Tensor y = Tensor::empty(x.shape());
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * d;
    float* yr = yp + r * d;
    // Subtracting the max keeps every exponent <= 0: no overflow, and the largest term is 1.
    float m = xr[0];
    for (int64_t j = 1; j < d; ++j) m = std::fmax(m, xr[j]);
    double total = 0;
    for (int64_t j = 0; j < d; ++j) {
      yr[j] = std::exp(xr[j] - m);
      total += yr[j];
    }
    for (int64_t j = 0; j < d; ++j) yr[j] = static_cast<float>(yr[j] / total);
  }
  ctx.save({y});
  return {y};
}

std::vector<Tensor> softmax_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor& y = ctx.saved[0];
  const Tensor g = grad_or_zeros(grad_out[0], y.shape());
  const int64_t d = y.shape().last(), rows = y.shape().rows();
  Tensor dx = Tensor::empty(y.shape());
  const float *yp = y.data<float>(), *gp = g.data<float>();
  float* dp = dx.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float *yr = yp + r * d, *gr = gp + r * d;
    double dot = 0;  // sum_j g_j y_j
    for (int64_t j = 0; j < d; ++j) dot += static_cast<double>(gr[j]) * yr[j];
    for (int64_t j = 0; j < d; ++j) dp[r * d + j] = static_cast<float>(yr[j] * (gr[j] - dot));
  }
  return {dx};
}

}  // namespace engine::cpu
