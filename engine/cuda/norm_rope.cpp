// CUDA implementations of rms_norm and rope; semantics of the CPU reference
// (engine/cpu/norm_rope.cpp), kernels in kernels/rmsnorm.cu and kernels/rope.cu.
//
// rms_norm: x [..., D], w [D], same dtype (f32 or bf16) on one device; y in that dtype,
//   the per-row rstd saved in f32 for backward. Backward writes dx and, only when the
//   norm weight trains (needs_grad), dw through a deterministic two-pass reduction
//   (an fp32 workspace of per-tile partial sums, then a fixed-order sum).
// rope: x [B, T, H, Dh] f32 or bf16; backward rotates the gradient by -angle. The
//   frequencies come from kmath::rope_inv_freq computed here, on the host, exactly as
//   the CPU reference computes them.
#include <vector>

#include "engine/cuda/op_helpers.h"
#include "engine/cuda/ops.h"
#include "engine/cuda/runtime.h"
#include "engine/op_shapes.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"

namespace engine::cuda_ops {

namespace {

// out = x rotated by +angle (forward) or -angle (inverse: backward).
Tensor rotate(const Tensor& x, const OpAttrs& a, bool inverse, const Tensor& positions) {
  const kernels::ElemType t = arith_type(x, "rope", inverse ? "gradient" : "x");
  check_rope(x.shape(), a);
  const Shape& s = x.shape();
  ENGINE_CHECK(s[3] / 2 <= kernels::kRopeMaxHalf, "rope: head dim ", s[3],
               " is larger than the CUDA kernel's ", 2 * kernels::kRopeMaxHalf);
  std::vector<float> inv_freq(static_cast<size_t>(s[3] / 2));
  kernels::rope_inv_freq_table(inv_freq.data(), static_cast<int>(s[3]), a.rope);
  if (positions.defined())
    ENGINE_CHECK(positions.dtype() == DType::I32 && positions.shape() == Shape({s[0], s[1]}) &&
                     positions.device() == x.device(),
                 "rope: positions must be i32 [", s[0], ", ", s[1], "] on ", x.device().str(),
                 ", got ", positions.str());
  Tensor out = Tensor::empty(s, x.dtype(), x.device());
  kernels::rope(out.raw_data(), x.raw_data(), t, s[0], s[1], s[2], s[3], a.position_offset,
                inv_freq.data(), inverse, cuda::current_stream(),
                positions.defined() ? positions.data<int32_t>() : nullptr);
  return out;
}

}  // namespace

std::vector<Tensor> rms_norm_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &x = in[0], &w = in[1];
  const kernels::ElemType t = arith_type(x, "rms_norm", "x");
  arith_type(w, "rms_norm", "weight");
  ENGINE_CHECK(w.dtype() == x.dtype(), "rms_norm: weight ", w.str(), " and x ", x.str(),
               " differ in dtype");
  check_rms_norm(x.shape(), w.shape(), ctx.attrs.eps);
  const int64_t d = x.shape().last(), rows = x.shape().rows();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor rstd = Tensor::empty(Shape{rows}, DType::F32, x.device());
  kernels::rmsnorm_forward(y.raw_data(), static_cast<float*>(rstd.raw_data()), x.raw_data(),
                           w.raw_data(), t, rows, d, ctx.attrs.eps, cuda::current_stream());
  ctx.save({x, w, rstd});
  return {y};
}

std::vector<Tensor> rms_norm_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &x = ctx.saved[0], &w = ctx.saved[1], &rstd = ctx.saved[2];
  const Tensor g = grad_like(grad_out[0], x.shape(), x);
  const int64_t d = x.shape().last(), rows = x.shape().rows();
  const bool need_dx = ctx.wants_grad(0), need_dw = ctx.wants_grad(1);
  if (!need_dx && !need_dw) return {Tensor(), Tensor()};
  Tensor dx = need_dx ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
  Tensor dw = need_dw ? Tensor::empty(w.shape(), w.dtype(), w.device()) : Tensor();
  Tensor workspace;
  if (need_dw)
    workspace = Tensor::empty({kernels::rmsnorm_backward_workspace_floats(rows, d)}, DType::F32,
                              x.device());
  kernels::rmsnorm_backward(need_dx ? dx.raw_data() : nullptr, need_dw ? dw.raw_data() : nullptr,
                            need_dw ? static_cast<float*>(workspace.raw_data()) : nullptr,
                            g.raw_data(), x.raw_data(), w.raw_data(),
                            static_cast<const float*>(rstd.raw_data()),
                            arith_type(x, "rms_norm", "x"), rows, d, cuda::current_stream());
  return {dx, dw};
}

std::vector<Tensor> rope_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor positions = in.size() > 1 ? in[1] : Tensor();  // packed sequences
  if (positions.defined()) ctx.save({positions});
  return {rotate(in[0], ctx.attrs, false, positions)};
}

std::vector<Tensor> rope_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  // The node has one output, so autograd only calls this with its gradient defined; the
  // gradient's dtype is the output's, which is the input's.
  ENGINE_CHECK(grad_out[0].defined() && grad_out[0].shape() == ctx.input_shapes[0],
               "rope: backward needs the output gradient of shape ", ctx.input_shapes[0].str());
  return {rotate(grad_out[0], ctx.attrs, true, ctx.saved.empty() ? Tensor() : ctx.saved[0])};
}

}  // namespace engine::cuda_ops
