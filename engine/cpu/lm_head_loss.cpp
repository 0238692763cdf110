// CPU reference of the fused lm_head cross-entropy (op lm_head_cross_entropy):
//
//   h [N, H] f32, W [V, H] f32 (the lm_head), targets i32 [N]
//   z_n = h_n W^T                       logits of row n, [V]
//   L_n = lse(z_n) - z_n[t_n]           for counted rows (t_n != ignore_index)
//   loss = (1 / C) sum over counted n of L_n,   C = counted rows; 0 when C == 0
// Backward, with g = dloss and d_n = (g / C) (softmax(z_n) - onehot(t_n)) (0 if ignored):
//   dh_n = d_n W            dW = sum_n d_n^T h_n
// Rows are processed in chunks of chunk_rows (0: N / 32 rows, at least 1), so only a
// [chunk, V] block of logits exists at a time; backward recomputes it from h and W and
// the saved per-row lse. Saved: h, W, targets, lse (f32 [N], 0 on ignored rows).
//
// The arithmetic is the unfused reference's, operation for operation, so that this op
// equals cross_entropy(matmul(h, W^T), targets) bitwise (tests/engine/test_lm_head_loss):
// logits are double dot products rounded to float (engine/cpu/matmul.cpp), lse and the
// loss sum are double (engine/cpu/embedding_loss.cpp), each dh element is one double
// dot product over V, and dW sums over all N rows in one double accumulator in row
// order, rounded once at the end.
#include <algorithm>
#include <vector>

#include "engine/cpu/ops.h"
#include "kernels/math/cross_entropy.h"

namespace engine::cpu {

namespace {

struct LmHeadDims {
  int64_t n, h, v;
};

LmHeadDims lm_head_dims(const Tensor& h, const Tensor& w, const Tensor& targets) {
  require_f32(h, "lm_head_cross_entropy", "h");
  require_f32(w, "lm_head_cross_entropy", "weight");
  ENGINE_CHECK(targets.dtype() == DType::I32, "lm_head_cross_entropy: targets must be i32, got ",
               targets.str());
  ENGINE_CHECK(h.rank() == 2 && w.rank() == 2 && w.dim(1) == h.dim(1),
               "lm_head_cross_entropy: h ", h.shape().str(), " and weight ", w.shape().str(),
               " are not [N, H] and [V, H]");
  ENGINE_CHECK(targets.rank() == 1 && targets.dim(0) == h.dim(0), "lm_head_cross_entropy: targets ",
               targets.shape().str(), " do not match h ", h.shape().str());
  return {h.dim(0), h.dim(1), w.dim(0)};
}

int64_t chunk_rows(const OpAttrs& a, int64_t n) {
  const int64_t r = a.chunk_rows > 0 ? a.chunk_rows : n / 32;
  return std::clamp<int64_t>(r, 1, std::max<int64_t>(n, 1));
}

// z [rows, V] = h[r0 .. r0 + rows) W^T, each element a double dot product rounded once.
void chunk_logits(const float* h, const float* w, const LmHeadDims& d, int64_t r0, int64_t rows,
                  float* z) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t v = 0; v < d.v; ++v) {
      double s = 0;
      for (int64_t p = 0; p < d.h; ++p)
        s += static_cast<double>(h[(r0 + i) * d.h + p]) * w[v * d.h + p];
      z[i * d.v + v] = static_cast<float>(s);
    }
}

}  // namespace

std::vector<Tensor> lm_head_cross_entropy_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &h = in[0], &w = in[1], &targets = in[2];
  const LmHeadDims d = lm_head_dims(h, w, targets);
  const int ignore = ctx.attrs.ignore_index;
  const int32_t* tp = targets.data<int32_t>();
  for (int64_t n = 0; n < d.n; ++n)
    ENGINE_CHECK(!kmath::ce_counted(tp[n], ignore) || (tp[n] >= 0 && tp[n] < d.v),
                 "lm_head_cross_entropy: target ", tp[n], " at row ", n, " is outside [0, ", d.v,
                 ") and is not ignore_index ", ignore);
  Tensor lse = Tensor::zeros(Shape{d.n});
  const int64_t rows = chunk_rows(ctx.attrs, d.n);
  std::vector<float> z(static_cast<size_t>(rows * d.v));
  double total = 0;
  int64_t count = 0;
  for (int64_t r0 = 0; r0 < d.n; r0 += rows) {
    const int64_t r = std::min(rows, d.n - r0);
    chunk_logits(h.data<float>(), w.data<float>(), d, r0, r, z.data());
    for (int64_t i = 0; i < r; ++i) {
      const int32_t t = tp[r0 + i];
      if (!kmath::ce_counted(t, ignore)) continue;
      const float* zi = z.data() + i * d.v;
      const double l = kmath::ce_row_lse<double>(zi, d.v);
      lse.data<float>()[r0 + i] = static_cast<float>(l);
      total += l - zi[t];
      ++count;
    }
  }
  ctx.save({h, w, targets, lse});
  return {Tensor::full(Shape{}, count > 0 ? static_cast<float>(total / count) : 0.0f)};
}

std::vector<Tensor> lm_head_cross_entropy_backward(OpContext& ctx,
                                                   const std::vector<Tensor>& grad_out) {
  const Tensor &h = ctx.saved[0], &w = ctx.saved[1], &targets = ctx.saved[2], &lse = ctx.saved[3];
  const LmHeadDims d = lm_head_dims(h, w, targets);
  const int ignore = ctx.attrs.ignore_index;
  const int32_t* tp = targets.data<int32_t>();
  const bool want_dh = ctx.wants_grad(0), want_dw = ctx.wants_grad(1);
  int64_t count = 0;
  for (int64_t n = 0; n < d.n; ++n) count += kmath::ce_counted(tp[n], ignore);
  Tensor dh = want_dh ? Tensor::zeros(h.shape()) : Tensor();
  Tensor dw = want_dw ? Tensor::zeros(w.shape()) : Tensor();
  if (count == 0 || !grad_out[0].defined()) return {dh, dw, Tensor()};

  const double coef = static_cast<double>(grad_out[0].item()) / count;
  const int64_t rows = chunk_rows(ctx.attrs, d.n);
  std::vector<float> z(static_cast<size_t>(rows * d.v));
  std::vector<double> dw_sum(want_dw ? static_cast<size_t>(d.v * d.h) : 0, 0.0);
  const float *hp = h.data<float>(), *wp = w.data<float>(), *lp = lse.data<float>();
  for (int64_t r0 = 0; r0 < d.n; r0 += rows) {
    const int64_t r = std::min(rows, d.n - r0);
    chunk_logits(hp, wp, d, r0, r, z.data());
    // z becomes the chunk's dlogits (ignored rows: 0).
    for (int64_t i = 0; i < r; ++i) {
      const int32_t t = tp[r0 + i];
      const bool counted = kmath::ce_counted(t, ignore);
      for (int64_t v = 0; v < d.v; ++v) {
        float& e = z[i * d.v + v];
        e = counted ? static_cast<float>(kmath::ce_dlogit<double>(e, lp[r0 + i], coef, v == t))
                    : 0.0f;
      }
    }
    if (want_dh)
      for (int64_t i = 0; i < r; ++i)
        for (int64_t p = 0; p < d.h; ++p) {
          double s = 0;
          for (int64_t v = 0; v < d.v; ++v)
            s += static_cast<double>(z[i * d.v + v]) * wp[v * d.h + p];
          dh.data<float>()[(r0 + i) * d.h + p] = static_cast<float>(s);
        }
    if (want_dw)  // rows in order: the same double sums as one unchunked pass
      for (int64_t v = 0; v < d.v; ++v)
        for (int64_t p = 0; p < d.h; ++p) {
          double& s = dw_sum[v * d.h + p];
          for (int64_t i = 0; i < r; ++i)
            s += static_cast<double>(z[i * d.v + v]) * hp[(r0 + i) * d.h + p];
        }
  }
  if (want_dw)
    for (int64_t i = 0; i < d.v * d.h; ++i) dw.data<float>()[i] = static_cast<float>(dw_sum[i]);
  return {dh, dw, Tensor()};
}

}  // namespace engine::cpu
