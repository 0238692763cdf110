// CPU reference: batched matmul with optional transposes.
//   C[b] = op(A[b]) @ op(B[b]),  op(X) = X or X^T over the last two dims.
// Backward (for C = A B without transposes): dA = dC B^T, dB = A^T dC; the
// transposed cases follow by swapping roles, and a 2-D B shared across batches
// sums its gradient over the batch.
#include "engine/cpu/ops.h"
#include "engine/op_shapes.h"

namespace engine::cpu {

namespace {

// out[b] (+)= op(x[b]) @ op(y[b]) for plain row-major buffers; element (r, c) of a
// [rows, cols] matrix stored transposed sits at c * rows + r.
void gemm(const float* x, bool tx, int64_t x_stride, const float* y, bool ty, int64_t y_stride,
          float* out, int64_t batch, int64_t m, int64_t k, int64_t n, bool accumulate) {
  for (int64_t b = 0; b < batch; ++b) {
    const float* xb = x + b * x_stride;
    const float* yb = y + b * y_stride;
    float* ob = out + b * m * n;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p) {
          float xv = tx ? xb[p * m + i] : xb[i * k + p];
          float yv = ty ? yb[j * k + p] : yb[p * n + j];
          s += static_cast<double>(xv) * yv;
        }
        ob[i * n + j] = static_cast<float>(accumulate ? ob[i * n + j] + s : s);
      }
  }
}

}  // namespace

std::vector<Tensor> matmul_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &a = in[0], &b = in[1];
  require_f32(a, "matmul", "a");
  require_f32(b, "matmul", "b");
  bool ta = ctx.attrs.transpose_a, tb = ctx.attrs.transpose_b;
  MatmulDims d = matmul_dims(a.shape(), b.shape(), ta, tb);
  Tensor out = Tensor::empty(a.shape().with(-2, d.m).with(-1, d.n));
  gemm(a.data<float>(), ta, d.m * d.k, b.data<float>(), tb, d.b_shared ? 0 : d.k * d.n,
       out.data<float>(), d.batch, d.m, d.k, d.n, false);
  ctx.save({a, b});
  return {out};
}

std::vector<Tensor> matmul_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &a = ctx.saved[0], &b = ctx.saved[1];
  bool ta = ctx.attrs.transpose_a, tb = ctx.attrs.transpose_b;
  MatmulDims d = matmul_dims(a.shape(), b.shape(), ta, tb);
  const float* g = grad_out[0].data<float>();  // [batch, m, n]
  Tensor da, db;
  if (ctx.wants_grad(0)) {
    da = Tensor::empty(a.shape());
    // op(A) = G op(B)^T  ->  A = G op(B)^T  or  A = op(B) G^T when A is transposed.
    if (!ta)
      gemm(g, false, d.m * d.n, b.data<float>(), !tb, d.b_shared ? 0 : d.k * d.n,
           da.data<float>(), d.batch, d.m, d.n, d.k, false);
    else
      gemm(b.data<float>(), tb, d.b_shared ? 0 : d.k * d.n, g, true, d.m * d.n, da.data<float>(),
           d.batch, d.k, d.n, d.m, false);
  }
  if (ctx.wants_grad(1)) {
    db = Tensor::zeros(b.shape());
    int64_t out_stride = d.b_shared ? 0 : d.k * d.n;
    for (int64_t bi = 0; bi < d.batch; ++bi) {
      const float* ab = a.data<float>() + bi * d.m * d.k;
      const float* gb = g + bi * d.m * d.n;
      float* dbb = db.data<float>() + bi * out_stride;
      // op(B) = op(A)^T G  ->  B = op(A)^T G  or  B = G^T op(A) when B is transposed.
      if (!tb) gemm(ab, !ta, 0, gb, false, 0, dbb, 1, d.k, d.m, d.n, true);
      else gemm(gb, true, 0, ab, ta, 0, dbb, 1, d.n, d.m, d.k, true);
    }
  }
  return {da, db};
}

}  // namespace engine::cpu
