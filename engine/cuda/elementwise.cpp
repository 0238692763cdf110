// CUDA implementations of add, mul and scale; semantics of the CPU reference
// (engine/cpu/elementwise.cpp), in f32 or bf16 with fp32 math (kernels/elementwise.cu).
// (reshape is a view: the op list runs its CPU functions on every device.)
#include "engine/cuda/op_helpers.h"
#include "engine/cuda/ops.h"
#include "engine/cuda/runtime.h"
#include "kernels/elementwise.h"

namespace engine::cuda_ops {

std::vector<Tensor> add_forward(OpContext&, const std::vector<Tensor>& in) {
  check_same(in[0], in[1], "add");
  Tensor out = empty_like(in[0]);
  kernels::add(out.raw_data(), in[0].raw_data(), in[1].raw_data(), arith_type(out, "add", "out"),
               out.numel(), cuda::current_stream());
  return {out};
}

std::vector<Tensor> add_backward(OpContext&, const std::vector<Tensor>& grad_out) {
  return {grad_out[0], grad_out[0]};
}

std::vector<Tensor> mul_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  check_same(in[0], in[1], "mul");
  Tensor out = empty_like(in[0]);
  kernels::mul(out.raw_data(), in[0].raw_data(), in[1].raw_data(), arith_type(out, "mul", "out"),
               out.numel(), cuda::current_stream());
  ctx.save({in[0], in[1]});
  return {out};
}

std::vector<Tensor> mul_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &a = ctx.saved[0], &b = ctx.saved[1];
  const Tensor g = grad_like(grad_out[0], a.shape(), a);
  const kernels::ElemType t = arith_type(a, "mul", "a");
  Tensor da, db;
  if (ctx.wants_grad(0)) {
    da = empty_like(a);
    kernels::mul(da.raw_data(), g.raw_data(), b.raw_data(), t, a.numel(), cuda::current_stream());
  }
  if (ctx.wants_grad(1)) {
    db = empty_like(b);
    kernels::mul(db.raw_data(), g.raw_data(), a.raw_data(), t, b.numel(), cuda::current_stream());
  }
  return {da, db};
}

std::vector<Tensor> scale_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const kernels::ElemType t = arith_type(in[0], "scale", "x");
  Tensor out = empty_like(in[0]);
  kernels::scale(out.raw_data(), in[0].raw_data(), ctx.attrs.factor, t, out.numel(),
                 cuda::current_stream());
  return {out};
}

std::vector<Tensor> scale_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  OpContext inner;
  inner.attrs.factor = ctx.attrs.factor;
  return scale_forward(inner, {grad_out[0]});
}

}  // namespace engine::cuda_ops
