// CPU reference: inverted dropout (per-element math in kernels/math/activations.h,
// shared with the CUDA kernel).
//   y_i  = keep_i ? x_i / (1 - p) : 0,  keep_i = kmath::dropout_keep(seed, offset, i, p)
//   dx_i = keep_i ? g_i / (1 - p) : 0,  with the mask regenerated, not stored.
#include "engine/cpu/ops.h"
#include "kernels/math/activations.h"

namespace engine::cpu {

namespace {

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
