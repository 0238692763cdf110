// CPU reference: RMSNorm and rotary position embedding.
//
// rms_norm, per row x of length D (the last dim), with r = 1/sqrt(mean(x^2) + eps):
//   y_j  = w_j * (x_j * r)
//   dx_k = r * (w_k g_k - (x_k r) * c),   c = r * sum_j(g_j w_j x_j) / D
//   dw_j = sum over rows of g_j * (x_j * r)
// The sums run in double here; the per-row and per-element steps are kmath's
// (kernels/math/rmsnorm.h), the same functions the CUDA kernels call.
// rope, x [B, T, H, Dh] at positions p = position_offset + t (or, given the optional
// i32 [B, T] positions of packed sequences, position_offset + positions[b, t]): each pair
// (x[i], x[i + Dh/2]) rotates by p * inv_freq_i (kernels/math/rope.h). The Jacobian
// of a rotation is the rotation, so the backward pass rotates the gradient by -angle.
#include <cmath>
#include <vector>

#include "engine/cpu/ops.h"
#include "engine/op_shapes.h"
#include "kernels/math/rmsnorm.h"
#include "kernels/math/rope.h"

namespace engine::cpu {

namespace {

// rotate() with per-token positions (i32 [B, T]): the angles per (b, t) instead of per t.
Tensor rotate_at(const Tensor& x, const OpAttrs& a, float sign, const Tensor& positions) {
  const Shape& s = x.shape();
  const int64_t batch = s[0], seq = s[1], heads = s[2], dh = s[3], half = dh / 2;
  ENGINE_CHECK(positions.dtype() == DType::I32 && positions.shape() == Shape({batch, seq}),
               "rope: positions must be i32 [", batch, ", ", seq, "], got ", positions.str());
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv_freq[i] = kmath::rope_inv_freq(static_cast<int>(i), static_cast<int>(dh), a.rope);
  Tensor out = Tensor::empty(s);
  const float* xp = x.data<float>();
  const int32_t* pp = positions.data<int32_t>();
  float* yp = out.data<float>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t)
      for (int64_t i = 0; i < half; ++i) {
        const float angle = kmath::rope_angle(a.position_offset + pp[b * seq + t], inv_freq[i]);
        const float c = std::cos(angle), sn = sign * std::sin(angle);
        for (int64_t h = 0; h < heads; ++h) {
          const int64_t base = ((b * seq + t) * heads + h) * dh;
          kmath::rope_rotate_pair(xp[base + i], xp[base + i + half], c, sn, &yp[base + i],
                                  &yp[base + i + half]);
        }
      }
  return out;
}

// out = x rotated by `sign` * angle (sign +1: forward, -1: inverse / backward).
Tensor rotate(const Tensor& x, const OpAttrs& a, float sign, const Tensor& positions) {
  const Shape& s = x.shape();
  const int64_t batch = s[0], seq = s[1], heads = s[2], dh = s[3], half = dh / 2;
  if (positions.defined()) return rotate_at(x, a, sign, positions);

  // cos/sin depend only on (t, i): tabulate once, [T, Dh/2].
  std::vector<float> cos_t(static_cast<size_t>(seq * half)), sin_t(cos_t.size());
  for (int64_t i = 0; i < half; ++i) {
    float inv_freq = kmath::rope_inv_freq(static_cast<int>(i), static_cast<int>(dh), a.rope);
    for (int64_t t = 0; t < seq; ++t) {
      float angle = kmath::rope_angle(a.position_offset + t, inv_freq);
      cos_t[static_cast<size_t>(t * half + i)] = std::cos(angle);
      sin_t[static_cast<size_t>(t * half + i)] = sign * std::sin(angle);
    }
  }

  Tensor out = Tensor::empty(s);
  const float* xp = x.data<float>();
  float* yp = out.data<float>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        int64_t base = ((b * seq + t) * heads + h) * dh;
        for (int64_t i = 0; i < half; ++i) {
          size_t k = static_cast<size_t>(t * half + i);
          kmath::rope_rotate_pair(xp[base + i], xp[base + i + half], cos_t[k], sin_t[k],
                                  &yp[base + i], &yp[base + i + half]);
        }
      }
  return out;
}

}  // namespace

std::vector<Tensor> rms_norm_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &x = in[0], &w = in[1];
  require_f32(x, "rms_norm", "x");
  require_f32(w, "rms_norm", "weight");
  check_rms_norm(x.shape(), w.shape(), ctx.attrs.eps);
  const int64_t d = x.shape().last(), rows = x.shape().rows();
  Tensor y = Tensor::empty(x.shape());
  Tensor rstd = Tensor::empty(Shape{rows});  // saved so backward need not recompute it
  const float *xp = x.data<float>(), *wp = w.data<float>();
  float *yp = y.data<float>(), *rp = rstd.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * d;
    double sum_sq = 0;
    for (int64_t j = 0; j < d; ++j) sum_sq += static_cast<double>(xr[j]) * xr[j];
    const float inv = kmath::rmsnorm_rstd(static_cast<float>(sum_sq), d, ctx.attrs.eps);
    rp[r] = inv;
    for (int64_t j = 0; j < d; ++j) yp[r * d + j] = kmath::rmsnorm_apply(xr[j], wp[j], inv);
  }
  ctx.save({x, w, rstd});
  return {y};
}

std::vector<Tensor> rms_norm_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &x = ctx.saved[0], &w = ctx.saved[1], &rstd = ctx.saved[2];
  const Tensor g = grad_or_zeros(grad_out[0], x.shape());
  const int64_t d = x.shape().last(), rows = x.shape().rows();
  const float *xp = x.data<float>(), *wp = w.data<float>(), *gp = g.data<float>();
  const float* rp = rstd.data<float>();
  const bool need_dx = ctx.wants_grad(0), need_dw = ctx.wants_grad(1);
  Tensor dx = need_dx ? Tensor::empty(x.shape()) : Tensor();
  std::vector<double> dw_acc(need_dw ? static_cast<size_t>(d) : 0, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = xp + r * d, *gr = gp + r * d;
    const float inv = rp[r];
    if (need_dx) {
      double dot = 0;  // sum_j g_j w_j x_j
      for (int64_t j = 0; j < d; ++j) dot += static_cast<double>(gr[j]) * wp[j] * xr[j];
      const float c = kmath::rmsnorm_dx_coef(static_cast<float>(dot), inv, d);
      for (int64_t j = 0; j < d; ++j)
        dx.data<float>()[r * d + j] = kmath::rmsnorm_dx(xr[j], wp[j], gr[j], inv, c);
    }
    if (need_dw)
      for (int64_t j = 0; j < d; ++j)
        dw_acc[static_cast<size_t>(j)] += kmath::rmsnorm_dw_term(xr[j], gr[j], inv);
  }
  Tensor dw;
  if (need_dw) {
    dw = Tensor::empty(w.shape());
    for (int64_t j = 0; j < d; ++j) dw.data<float>()[j] = static_cast<float>(dw_acc[static_cast<size_t>(j)]);
  }
  return {dx, dw};
}

std::vector<Tensor> rope_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  require_f32(in[0], "rope", "x");
  check_rope(in[0].shape(), ctx.attrs);
  const Tensor positions = in.size() > 1 ? in[1] : Tensor();
  if (positions.defined()) ctx.save({positions});
  return {rotate(in[0], ctx.attrs, 1.0f, positions)};
}

std::vector<Tensor> rope_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor g = grad_or_zeros(grad_out[0], ctx.input_shapes[0]);
  // positions are indices: no gradient.
  return {rotate(g, ctx.attrs, -1.0f, ctx.saved.empty() ? Tensor() : ctx.saved[0])};
}

}  // namespace engine::cpu
