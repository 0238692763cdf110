// CPU reference of the fused lm_head cross-entropy (op lm_head_cross_entropy):
//
//   h [N, H] f32, W [V, H] f32 (the lm_head), targets i32 [N]
//   z_n = h_n W^T                       logits of row n, [V]
//   L_n = lse(z_n) - z_n[t_n]           for counted rows (t_n != ignore_index)
//   loss = (1 / C) sum over counted n of L_n,   C = counted rows; 0 when C == 0
// Backward, with g = dloss and d_n = (g / C) (softmax(z_n) - onehot(t_n)) (0 if ignored):
//   dh_n = d_n W            dW = sum_n d_n^T h_n
// Rows are processed in chunks of chunk_rows (0: N / 32 rows, at least 1; engine/cpu/
// lm_head_rows.h), so only a [chunk, V] block of logits exists at a time; backward recomputes it from h and W and
// the saved per-row lse. Saved: h, W, targets, lse (f32 [N], 0 on ignored rows).
//
// The arithmetic is the unfused reference's, operation for operation, so that this op
// equals cross_entropy(matmul(h, W^T), targets) bitwise (tests/engine/test_lm_head_loss):
// logits are double dot products rounded to float (engine/cpu/matmul.cpp), lse and the
// loss sum are double (engine/cpu/embedding_loss.cpp), each dh element is one double
// dot product over V, and dW sums over all N rows in one double accumulator in row
// order, rounded once at the end.
#include <vector>

#include "engine/cpu/lm_head_rows.h"
#include "engine/cpu/ops.h"
#include "kernels/math/cross_entropy.h"

namespace engine::cpu {

namespace {
constexpr const char* kOp = "lm_head_cross_entropy";
}  // namespace

std::vector<Tensor> lm_head_cross_entropy_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &h = in[0], &w = in[1], &targets = in[2];
  const int ignore = ctx.attrs.ignore_index;
  const LmHeadDims d = lm_head_dims(kOp, h, w, targets, ignore);
  const int32_t* tp = targets.data<int32_t>();
  Tensor lse = Tensor::zeros(Shape{d.n});
  double total = 0;
  int64_t count = 0;
  for_each_logit_chunk(d, h, w, targets, ignore, ctx.attrs.chunk_rows, [&](int64_t r0, int64_t r, float* z) {
    for (int64_t i = 0; i < r; ++i) {
      const int32_t t = tp[r0 + i];
      if (!kmath::ce_counted(t, ignore)) continue;
      const float* zi = z + i * d.v;
      const double l = kmath::ce_row_lse<double>(zi, d.v);
      lse.data<float>()[r0 + i] = static_cast<float>(l);
      total += l - zi[t];
      ++count;
    }
  });
  ctx.save({h, w, targets, lse});
  return {Tensor::full(Shape{}, count > 0 ? static_cast<float>(total / count) : 0.0f)};
}

std::vector<Tensor> lm_head_cross_entropy_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &h = ctx.saved[0], &w = ctx.saved[1], &targets = ctx.saved[2], &lse = ctx.saved[3];
  const int ignore = ctx.attrs.ignore_index;
  const LmHeadDims d = lm_head_dims(kOp, h, w, targets, ignore);
  const int32_t* tp = targets.data<int32_t>();
  const bool want_dh = ctx.wants_grad(0), want_dw = ctx.wants_grad(1);
  int64_t count = 0;
  for (int64_t n = 0; n < d.n; ++n) count += kmath::ce_counted(tp[n], ignore);
  if (count == 0 || !grad_out[0].defined())
    return {want_dh ? Tensor::zeros(h.shape()) : Tensor(), want_dw ? Tensor::zeros(w.shape()) : Tensor(), Tensor()};
  const double coef = static_cast<double>(grad_out[0].item()) / count;
  return lm_head_backward(d, h, w, targets, lse, ignore, ctx.attrs.chunk_rows, want_dh, want_dw,
                          [&](int64_t) { return coef; });
}

}  // namespace engine::cpu
