// CUDA implementation of matmul; semantics of the CPU reference (engine/cpu/matmul.cpp),
// in f32 or bf16 with fp32 accumulation (cuBLASLt).
//
// C[b] = op(A[b]) @ op(B[b]) (op = optional transpose of the last two dims):
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

namespace engine::cuda_ops {

namespace {

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
  if (ctx.wants_grad(0)) {
    da = empty_like(a);
    if (!ta && d.b_shared)  // dA [batch*M, K] = G [batch*M, N] op(B)^T
      gemm_into(da.raw_data(), t, false, !tb, d.batch * d.m, d.k, d.n, {G.data, t, 0}, B, 1);
    else if (!ta)  // dA[b] = G[b] op(B[b])^T
      gemm_into(da.raw_data(), t, false, !tb, d.m, d.k, d.n, G, B, d.batch);
    else  // A[b] is stored [K, M]: dA[b] = op(B[b]) G[b]^T
      gemm_into(da.raw_data(), t, tb, true, d.k, d.m, d.n, B, G, d.batch);
  }
  if (ctx.wants_grad(1)) {
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

}  // namespace engine::cuda_ops
