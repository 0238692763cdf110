// CUDA implementations of matmul, add, mul, scale, silu and swiglu; the semantics
// are the CPU reference's (engine/cpu/matmul.cpp, elementwise.cpp, activations.cpp),
// in f32 or bf16 with fp32 math. (reshape is a view: the registry uses its
// device-agnostic implementation for CUDA tensors too.)
//
// matmul, C[b] = op(A[b]) @ op(B[b]) (op = optional transpose of the last two dims):
//   forward  one cuBLASLt call: batched (strided), or, for a shared 2-D B and an
//            untransposed A, a single GEMM over the flattened batch [batch*M, K].
//   dA       G op(B)^T (or op(B) G^T when A is transposed), one batched GEMM.
//   dB       op(A)^T G (or G^T op(A) when B is transposed). For a shared B the batch
//            sum is taken inside one GEMM over the flattened batch (reduction length
//            batch*M), deterministic and without atomics. When A is also transposed
//            the flattened A^T is not a strided matrix, so the batches are summed by
//            GEMMs issued in order into an fp32 accumulator (beta = 1), then rounded.
#include "engine/cuda/op_helpers.h"
#include "engine/cuda/ops.h"

#include "engine/cuda/cublaslt.h"
#include "engine/cuda/runtime.h"
#include "engine/op_shapes.h"
#include "kernels/elementwise.h"

namespace engine::cuda_ops {

namespace {

void check_same(const Tensor& a, const Tensor& b, const char* op) {
  arith_type(a, op, "a");
  arith_type(b, op, "b");
  ENGINE_CHECK(a.shape() == b.shape() && a.dtype() == b.dtype() && a.device() == b.device(), op,
               ": operands ", a.str(), " and ", b.str(), " differ");
}

// ---- matmul ---------------------------------------------------------------------

// A dense operand: its data, dtype, and the element stride between batches.
struct Operand {
  const void* data;
  DType dtype;
  int64_t stride;
};

// out (dense, stride m*n per batch) = op(x) @ op(y) over `batch` batches.
void gemm_into(void* out, DType out_type, bool tx, bool ty, int64_t m, int64_t n, int64_t k,
               Operand x, Operand y, int64_t batch, float beta = 0.0f) {
  cuda::gemm(tx, ty, m, n, k, 1.0f, x.data, x.dtype, x.stride, y.data, y.dtype, y.stride, beta,
             out, out_type, m * n, batch, cuda::current_stream());
}

const void* offset_elements(const Tensor& t, int64_t elements) {
  return static_cast<const char*>(t.raw_data()) + elements * (dtype_bits(t.dtype()) / 8);
}

}  // namespace

std::vector<Tensor> matmul_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &a = in[0], &b = in[1];
  arith_type(a, "matmul", "a");
  arith_type(b, "matmul", "b");
  ENGINE_CHECK(a.dtype() == b.dtype() && a.device() == b.device(), "matmul: operands ", a.str(),
               " and ", b.str(), " differ in dtype or device");
  const bool ta = ctx.attrs.transpose_a, tb = ctx.attrs.transpose_b;
  const MatmulDims d = matmul_dims(a.shape(), b.shape(), ta, tb);
  const DType t = a.dtype();
  Tensor out = Tensor::empty(a.shape().with(-2, d.m).with(-1, d.n), t, a.device());
  if (d.b_shared && !ta)  // [batch*M, K] @ op(B): one plain GEMM
    gemm_into(out.raw_data(), t, false, tb, d.batch * d.m, d.n, d.k, {a.raw_data(), t, 0},
              {b.raw_data(), t, 0}, 1);
  else
    gemm_into(out.raw_data(), t, ta, tb, d.m, d.n, d.k, {a.raw_data(), t, d.m * d.k},
              {b.raw_data(), t, d.b_shared ? 0 : d.k * d.n}, d.batch);
  ctx.save({a, b});
  return {out};
}

std::vector<Tensor> matmul_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &a = ctx.saved[0], &b = ctx.saved[1];
  const bool ta = ctx.attrs.transpose_a, tb = ctx.attrs.transpose_b;
  const MatmulDims d = matmul_dims(a.shape(), b.shape(), ta, tb);
  const DType t = a.dtype();
  const Tensor g = grad_like(grad_out[0], a.shape().with(-2, d.m).with(-1, d.n), a);
  const Operand G{g.raw_data(), t, d.m * d.n};
  const Operand A{a.raw_data(), t, d.m * d.k};
  const Operand B{b.raw_data(), t, d.b_shared ? 0 : d.k * d.n};
  Tensor da, db;
  if (wants_grad(ctx, 0)) {
    da = empty_like(a);
    if (!ta && d.b_shared)  // dA [batch*M, K] = G [batch*M, N] op(B)^T
      gemm_into(da.raw_data(), t, false, !tb, d.batch * d.m, d.k, d.n, {G.data, t, 0}, B, 1);
    else if (!ta)  // dA[b] = G[b] op(B[b])^T
      gemm_into(da.raw_data(), t, false, !tb, d.m, d.k, d.n, G, B, d.batch);
    else  // A[b] is stored [K, M]: dA[b] = op(B[b]) G[b]^T
      gemm_into(da.raw_data(), t, tb, true, d.k, d.m, d.n, B, G, d.batch);
  }
  if (wants_grad(ctx, 1)) {
    db = empty_like(b);
    if (!d.b_shared) {
      if (!tb)  // dB[b] [K, N] = op(A[b])^T G[b]
        gemm_into(db.raw_data(), t, !ta, false, d.k, d.n, d.m, A, G, d.batch);
      else  // dB[b] [N, K] = G[b]^T op(A[b])
        gemm_into(db.raw_data(), t, true, ta, d.n, d.k, d.m, G, A, d.batch);
    } else if (!ta) {
      // Sum over the batch = one GEMM whose reduction runs over the flattened batch.
      const Operand A1{A.data, t, 0}, G1{G.data, t, 0};
      if (!tb)  // dB [K, N] = A_flat^T [K, batch*M] G_flat [batch*M, N]
        gemm_into(db.raw_data(), t, true, false, d.k, d.n, d.batch * d.m, A1, G1, 1);
      else  // dB [N, K] = G_flat^T [N, batch*M] A_flat [batch*M, K]
        gemm_into(db.raw_data(), t, true, false, d.n, d.k, d.batch * d.m, G1, A1, 1);
    } else {
      // A[b] stored [K, M]: sum the batches in order into fp32 (deterministic).
      Tensor acc = t == DType::F32 ? db : Tensor::empty(b.shape(), DType::F32, b.device());
      for (int64_t i = 0; i < d.batch; ++i) {
        const Operand Ai{offset_elements(a, i * d.m * d.k), t, 0};
        const Operand Gi{offset_elements(g, i * d.m * d.n), t, 0};
        float beta = i == 0 ? 0.0f : 1.0f;
        if (!tb)  // dB [K, N] += A[b] [K, M] G[b] [M, N]
          gemm_into(acc.raw_data(), DType::F32, false, false, d.k, d.n, d.m, Ai, Gi, 1, beta);
        else  // dB [N, K] += G[b]^T [N, M] A[b]^T [M, K]
          gemm_into(acc.raw_data(), DType::F32, true, true, d.n, d.k, d.m, Gi, Ai, 1, beta);
      }
      if (t != DType::F32) cuda::convert(db, acc);
    }
  }
  return {da, db};
}

// ---- elementwise ----------------------------------------------------------------

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
  if (wants_grad(ctx, 0)) {
    da = empty_like(a);
    kernels::mul(da.raw_data(), g.raw_data(), b.raw_data(), t, a.numel(), cuda::current_stream());
  }
  if (wants_grad(ctx, 1)) {
    db = empty_like(b);
    kernels::mul(db.raw_data(), g.raw_data(), a.raw_data(), t, b.numel(), cuda::current_stream());
  }
  return {da, db};
}

std::vector<Tensor> scale_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const kernels::ElemType t = arith_type(in[0], "scale", "x");
  Tensor out = empty_like(in[0]);
  kernels::scale(out.raw_data(), in[0].raw_data(), ctx.attrs.scale, t, out.numel(),
                 cuda::current_stream());
  return {out};
}

std::vector<Tensor> scale_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  OpContext inner;
  inner.attrs.scale = ctx.attrs.scale;
  return scale_forward(inner, {grad_out[0]});
}

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
  if (!wants_grad(ctx, 0)) dgate = Tensor();
  if (!wants_grad(ctx, 1)) dup = Tensor();
  return {dgate, dup};
}

}  // namespace engine::cuda_ops
