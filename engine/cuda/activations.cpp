// CUDA implementations of silu and swiglu; semantics of the CPU reference
// (engine/cpu/activations.cpp), in f32 or bf16 with fp32 math (kernels/elementwise.cu).
#include "engine/cuda/op_helpers.h"
#include "engine/cuda/ops.h"
#include "engine/cuda/runtime.h"
#include "kernels/elementwise.h"

namespace engine::cuda_ops {

std::vector<Tensor> silu_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const kernels::ElemType t = arith_type(in[0], "silu", "x");
  Tensor y = empty_like(in[0]);
  kernels::silu_forward(y.raw_data(), in[0].raw_data(), t, y.numel(), cuda::current_stream());
  ctx.save({in[0]});
  return {y};
}

std::vector<Tensor> silu_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor& x = ctx.saved[0];
  const Tensor g = grad_like(grad_out[0], x.shape(), x);
  Tensor dx = empty_like(x);
  kernels::silu_backward(dx.raw_data(), g.raw_data(), x.raw_data(), arith_type(x, "silu", "x"),
                         x.numel(), cuda::current_stream());
  return {dx};
}

std::vector<Tensor> swiglu_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &gate = in[0], &up = in[1];
  check_same(gate, up, "swiglu");
  Tensor y = empty_like(gate);
  kernels::swiglu_forward(y.raw_data(), gate.raw_data(), up.raw_data(),
                          arith_type(gate, "swiglu", "gate"), y.numel(), cuda::current_stream());
  ctx.save({gate, up});
  return {y};
}

std::vector<Tensor> swiglu_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &gate = ctx.saved[0], &up = ctx.saved[1];
  const Tensor g = grad_like(grad_out[0], gate.shape(), gate);
  // One pass writes both gradients; an unwanted one is dropped afterwards.
  Tensor dgate = empty_like(gate), dup = empty_like(up);
  kernels::swiglu_backward(dgate.raw_data(), dup.raw_data(), g.raw_data(), gate.raw_data(),
                           up.raw_data(), arith_type(gate, "swiglu", "gate"), gate.numel(),
                           cuda::current_stream());
  if (!ctx.wants_grad(0)) dgate = Tensor();
  if (!ctx.wants_grad(1)) dup = Tensor();
  return {dgate, dup};
}

}  // namespace engine::cuda_ops
