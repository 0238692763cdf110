// The dropout op on CUDA; semantics of the CPU reference (engine/cpu/dropout.cpp):
//   forward   y_i  = keep_i ? x_i / (1 - p) : 0
//   backward  dx_i = keep_i ? dy_i / (1 - p) : 0
//   keep_i    = kmath::dropout_keep(seed, offset, i, p)   (Philox word i % 4 at offset + i / 4)
// Nothing is saved: the mask is a pure function of (seed, offset, i) and backward
// regenerates it (kernels/dropout.cu). p == 0 is the identity and skips the RNG.
// f32 or bf16 storage, fp32 math, one rounding.
#include "kernels/dropout.h"

#include "engine/cuda/op_helpers.h"
#include "engine/cuda/ops.h"
#include "engine/cuda/runtime.h"
#include "engine/nvtx.h"
#include "kernels/math/activations.h"

namespace engine::cuda_ops {

namespace {

Tensor apply(const Tensor& x, const OpAttrs& a, const char* what) {
  const kernels::ElemType type = arith_type(x, "dropout", what);
  ENGINE_CHECK(a.p >= 0.0f && a.p < 1.0f, "dropout: p must be in [0, 1), got ", a.p);
  if (a.p == 0.0f) return x.clone();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::dropout(out.raw_data(), x.raw_data(), type, a.p, kmath::dropout_scale(a.p), a.seed,
                   a.offset, x.numel(), cuda::current_stream());
  return out;
}

}  // namespace

std::vector<Tensor> dropout_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  NvtxRange range("dropout_forward");
  return {apply(in[0], ctx.attrs, "x")};
}

// The gradient keeps the dtype it arrives in (the op's output dtype, which is x's).
std::vector<Tensor> dropout_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  NvtxRange range("dropout_backward");
  const Tensor& g = grad_out[0];
  if (!g.defined()) return {Tensor()};  // a zero gradient stays zero
  ENGINE_CHECK(g.shape() == ctx.input_shapes[0], "dropout: gradient ", g.str(),
               " does not match the input shape ", ctx.input_shapes[0].str());
  return {apply(g, ctx.attrs, "gradient")};
}

}  // namespace engine::cuda_ops
