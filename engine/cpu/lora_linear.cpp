// CPU reference of the (Q)LoRA linear op (math in engine/ops.h):
//   y  = x W^T + s * d(x) A^T B^T          d = seeded inverted dropout
//   dx = dy W + s * d'((dy B) A)            d' applies the same mask and scale
//   dA = s * (dy B)^T d(x)                  dB = s * dy^T (d(x) A^T)
// W is dequantized to f32 for the call and dropped again; only x, A, B are saved.
// Written with the reference ops themselves (forward and backward run with
// recording off), flattening leading dimensions to [N, features] for the
// weight-gradient products.
#include "engine/cpu/ops.h"
#include "engine/frozen_linear.h"
#include "engine/ops.h"

namespace engine::cpu {

namespace {
Tensor rows(const Tensor& t) { return t.view({t.shape().rows(), t.shape().last()}); }

Tensor dropped(const Tensor& x, const OpAttrs& a) {
  return a.p > 0 ? ops::dropout(x, a.p, a.seed, a.offset) : x;
}
}  // namespace

std::vector<Tensor> lora_linear_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &x = in[0], &a = in[1], &b = in[2];
  const OpAttrs& at = ctx.attrs;
  ENGINE_CHECK(at.frozen != nullptr, "lora_linear: no frozen base weight");
  const int64_t out = at.frozen->out_features(), in_f = at.frozen->in_features();
  ENGINE_CHECK(x.rank() >= 2 && x.shape().last() == in_f, "lora_linear: input ", x.str(),
               " does not end in in_features ", in_f);
  ENGINE_CHECK(a.rank() == 2 && a.dim(1) == in_f, "lora_linear: lora_A ", a.str(), " is not [r, ", in_f, "]");
  ENGINE_CHECK(b.rank() == 2 && b.dim(0) == out && b.dim(1) == a.dim(0), "lora_linear: lora_B ",
               b.str(), " is not [", out, ", ", a.dim(0), "]");
  Tensor w = at.frozen->dequantize(DType::F32, Device::cpu());
  Tensor y = ops::matmul(x, w, false, true);
  Tensor low_rank = ops::matmul(ops::matmul(dropped(x, at), a, false, true), b, false, true);
  ctx.save({x, a, b});
  return {ops::add(y, ops::scale(low_rank, at.lora_scaling))};
}

std::vector<Tensor> lora_linear_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &x = ctx.saved[0], &a = ctx.saved[1], &b = ctx.saved[2];
  const OpAttrs& at = ctx.attrs;
  const Tensor& g = grad_out[0];
  Tensor g_b = ops::matmul(g, b);  // [..., r]
  Tensor dx, da, db;
  if (ctx.wants_grad(0)) {
    Tensor w = at.frozen->dequantize(DType::F32, Device::cpu());
    dx = ops::add(ops::matmul(g, w),
                  ops::scale(dropped(ops::matmul(g_b, a), at), at.lora_scaling));
  }
  if (ctx.wants_grad(1))
    da = ops::scale(ops::matmul(rows(g_b), rows(dropped(x, at)), true, false), at.lora_scaling);
  if (ctx.wants_grad(2)) {
    Tensor x_a = ops::matmul(rows(dropped(x, at)), a, false, true);  // [N, r]
    db = ops::scale(ops::matmul(rows(g), x_a, true, false), at.lora_scaling);
  }
  return {dx, da, db};
}

}  // namespace engine::cpu
