// CPU reference: silu, swiglu, softmax, dropout (per-element math in
// kernels/math/activations.h, shared with the CUDA kernels).
//   silu:    y = x * sigmoid(x);            dx = g * silu'(x)
//   swiglu:  y = silu(gate) * up;           dgate = g * up * silu'(gate), dup = g * silu(gate)
//   softmax: y = e^(x - max) / sum e^(x - max) over the last dim;
//            dx = y * (g - sum(g * y))
//   dropout: y_i = keep_i ? x_i / (1 - p) : 0, keep_i = kmath::dropout_keep(seed, offset, i, p);
//            dx_i = keep_i ? g_i / (1 - p) : 0, with the mask regenerated, not stored.
#include <cmath>

#include "engine/cpu/ops.h"
#include "kernels/math/activations.h"

namespace engine::cpu {

namespace {

bool wants_grad(const OpContext& ctx, size_t i) {
  return i >= ctx.needs_grad.size() || ctx.needs_grad[i];
}

void check_dropout_p(float p) {
  // Written so that NaN fails too.
  ENGINE_CHECK(p >= 0.0f && p < 1.0f, "dropout: p must be in [0, 1), got ", p);
}

// y = dropout(x) with the stream (seed, offset); forward and backward are the same map.
Tensor apply_dropout(const Tensor& x, const OpAttrs& a) {
  if (a.p == 0.0f) return x.clone();  // identity; skip the RNG
  Tensor out = Tensor::empty(x.shape());
  const float scale = kmath::dropout_scale(a.p);
  const float* xp = x.data<float>();
  float* yp = out.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i)
    yp[i] = kmath::dropout_apply(xp[i], a.seed, a.offset, static_cast<uint64_t>(i), a.p, scale);
  return out;
}

}  // namespace

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
  if (wants_grad(ctx, 0)) {
    dgate = Tensor::empty(gate.shape());
    for (int64_t i = 0; i < gate.numel(); ++i)
      dgate.data<float>()[i] = gp[i] * kmath::swiglu_grad_gate(gatep[i], up_p[i]);
  }
  if (wants_grad(ctx, 1)) {
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

std::vector<Tensor> dropout_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  require_f32(in[0], "dropout", "x");
  check_dropout_p(ctx.attrs.p);
  return {apply_dropout(in[0], ctx.attrs)};
}

std::vector<Tensor> dropout_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor g = grad_or_zeros(grad_out[0], ctx.input_shapes[0]);
  return {apply_dropout(g, ctx.attrs)};
}

}  // namespace engine::cpu
