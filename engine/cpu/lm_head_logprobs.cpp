// CPU reference of the per-sequence log-probabilities (op lm_head_logprobs), the
// policy and reference terms of DPO:
//
//   h [N, H] f32, W [V, H] f32 (the lm_head), targets i32 [N]; the rows form
//   G = N / R sequences of R consecutive rows (R = segment_rows; 0: R = N)
//   z_n  = h_n W^T,   lp_n = z_n[t_n] - lse(z_n)        counted rows (t_n != ignore_index)
//   out_g = sum over counted n of sequence g of lp_n           (sigmoid DPO)
//         = that sum / C_g, C_g its counted rows; 0 if C_g = 0  (segment_mean: IPO)
// out is f32 [G]. Backward, with g = dout and c_n = g_{seq(n)} (/ C_g when mean):
//   dlogits_n = -c_n (softmax(z_n) - onehot(t_n))    (kmath::ce_dlogit with coef -c_n)
//   dh_n = dlogits_n W,   dW = sum_n dlogits_n^T h_n
// Rows go in chunks of chunk_rows (0: N / 32, at least 1) as in lm_head_cross_entropy
// (engine/cpu/lm_head_rows.h),
// so only a [chunk, V] block of logits exists; backward recomputes it from h, W and the
// saved lse (f32 [N], 0 on ignored rows). Sums are double, rounded once.
#include <algorithm>
#include <vector>

#include "engine/cpu/lm_head_rows.h"
#include "engine/cpu/ops.h"
#include "kernels/math/cross_entropy.h"

namespace engine::cpu {

namespace {

constexpr const char* kOp = "lm_head_logprobs";

struct Segments {
  int64_t rows, count;  // rows per sequence, sequences
};

Segments segments_of(const OpAttrs& a, int64_t n) {
  const int64_t r = a.segment_rows > 0 ? a.segment_rows : n;
  ENGINE_CHECK(n > 0 && n % r == 0, kOp, ": ", n, " rows are not whole sequences of ", r);
  return {r, n / r};
}

std::vector<int64_t> counted_per_segment(const Segments& seg, const Tensor& targets, int ignore) {
  std::vector<int64_t> c(static_cast<size_t>(seg.count), 0);
  const int32_t* tp = targets.data<int32_t>();
  for (int64_t n = 0; n < seg.rows * seg.count; ++n) c[n / seg.rows] += kmath::ce_counted(tp[n], ignore);
  return c;
}

}  // namespace

std::vector<Tensor> lm_head_logprobs_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &h = in[0], &w = in[1], &targets = in[2];
  const int ignore = ctx.attrs.ignore_index;
  const LmHeadDims d = lm_head_dims(kOp, h, w, targets, ignore);
  const Segments seg = segments_of(ctx.attrs, d.n);
  const int32_t* tp = targets.data<int32_t>();
  Tensor lse = Tensor::zeros(Shape{d.n});
  std::vector<double> sum(static_cast<size_t>(seg.count), 0.0);
  for_each_logit_chunk(d, h, w, targets, ignore, ctx.attrs.chunk_rows, [&](int64_t r0, int64_t r, float* z) {
    for (int64_t i = 0; i < r; ++i) {
      const int32_t t = tp[r0 + i];
      if (!kmath::ce_counted(t, ignore)) continue;
      const float* zi = z + i * d.v;
      const double l = kmath::ce_row_lse<double>(zi, d.v);
      lse.data<float>()[r0 + i] = static_cast<float>(l);
      sum[(r0 + i) / seg.rows] += zi[t] - l;
    }
  });
  const std::vector<int64_t> count = counted_per_segment(seg, targets, ignore);
  Tensor out = Tensor::zeros(Shape{seg.count});
  for (int64_t g = 0; g < seg.count; ++g)
    out.data<float>()[g] =
        static_cast<float>(!ctx.attrs.segment_mean ? sum[g] : count[g] > 0 ? sum[g] / count[g] : 0.0);
  ctx.save({h, w, targets, lse});
  return {out};
}

std::vector<Tensor> lm_head_logprobs_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &h = ctx.saved[0], &w = ctx.saved[1], &targets = ctx.saved[2], &lse = ctx.saved[3];
  const int ignore = ctx.attrs.ignore_index;
  const LmHeadDims d = lm_head_dims(kOp, h, w, targets, ignore);
  const Segments seg = segments_of(ctx.attrs, d.n);
  const bool want_dh = ctx.wants_grad(0), want_dw = ctx.wants_grad(1);
  if (!grad_out[0].defined())
    return {want_dh ? Tensor::zeros(h.shape()) : Tensor(), want_dw ? Tensor::zeros(w.shape()) : Tensor(), Tensor()};
  const std::vector<float> g = grad_out[0].to_dtype(DType::F32).to_floats();
  const std::vector<int64_t> count = counted_per_segment(seg, targets, ignore);
  return lm_head_backward(d, h, w, targets, lse, ignore, ctx.attrs.chunk_rows, want_dh, want_dw, [&](int64_t n) {
    const int64_t s = n / seg.rows;  // -c_n
    return -(ctx.attrs.segment_mean ? double(g[s]) / std::max<int64_t>(count[s], 1) : g[s]);
  });
}

}  // namespace engine::cpu
