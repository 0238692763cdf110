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
// Rows go in chunks of chunk_rows (0: N / 32, at least 1) as in lm_head_cross_entropy,
// so only a [chunk, V] block of logits exists; backward recomputes it from h, W and the
// saved lse (f32 [N], 0 on ignored rows). Sums are double, rounded once.
#include <algorithm>
#include <vector>

#include "engine/cpu/ops.h"
#include "kernels/math/cross_entropy.h"

namespace engine::cpu {

namespace {

constexpr const char* kOp = "lm_head_logprobs";

struct Dims {
  int64_t n, h, v, seg_rows, segments;
};

Dims logprob_dims(const OpAttrs& a, const Tensor& h, const Tensor& w, const Tensor& targets) {
  require_f32(h, kOp, "h");
  require_f32(w, kOp, "weight");
  ENGINE_CHECK(targets.dtype() == DType::I32, kOp, ": targets must be i32, got ", targets.str());
  ENGINE_CHECK(h.rank() == 2 && w.rank() == 2 && w.dim(1) == h.dim(1), kOp, ": h ",
               h.shape().str(), " and weight ", w.shape().str(), " are not [N, H] and [V, H]");
  ENGINE_CHECK(targets.rank() == 1 && targets.dim(0) == h.dim(0), kOp, ": targets ",
               targets.shape().str(), " do not match h ", h.shape().str());
  const int64_t n = h.dim(0);
  const int64_t r = a.segment_rows > 0 ? a.segment_rows : n;
  ENGINE_CHECK(n > 0 && n % r == 0, kOp, ": ", n, " rows are not whole sequences of ", r);
  return {n, h.dim(1), w.dim(0), r, n / r};
}

int64_t chunk_rows(const OpAttrs& a, int64_t n) {
  const int64_t r = a.chunk_rows > 0 ? a.chunk_rows : n / 32;
  return std::clamp<int64_t>(r, 1, std::max<int64_t>(n, 1));
}

// z [rows, V] = h[r0 .. r0 + rows) W^T, each element a double dot product rounded once.
void chunk_logits(const float* h, const float* w, const Dims& d, int64_t r0, int64_t rows,
                  float* z) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t v = 0; v < d.v; ++v) {
      double s = 0;
      for (int64_t p = 0; p < d.h; ++p)
        s += static_cast<double>(h[(r0 + i) * d.h + p]) * w[v * d.h + p];
      z[i * d.v + v] = static_cast<float>(s);
    }
}

std::vector<int64_t> counted_per_segment(const Dims& d, const int32_t* tp, int ignore) {
  std::vector<int64_t> c(static_cast<size_t>(d.segments), 0);
  for (int64_t n = 0; n < d.n; ++n) c[n / d.seg_rows] += kmath::ce_counted(tp[n], ignore);
  return c;
}

}  // namespace

std::vector<Tensor> lm_head_logprobs_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &h = in[0], &w = in[1], &targets = in[2];
  const Dims d = logprob_dims(ctx.attrs, h, w, targets);
  const int ignore = ctx.attrs.ignore_index;
  const int32_t* tp = targets.data<int32_t>();
  for (int64_t n = 0; n < d.n; ++n)
    ENGINE_CHECK(!kmath::ce_counted(tp[n], ignore) || (tp[n] >= 0 && tp[n] < d.v), kOp,
                 ": target ", tp[n], " at row ", n, " is outside [0, ", d.v,
                 ") and is not ignore_index ", ignore);
  Tensor lse = Tensor::zeros(Shape{d.n});
  const int64_t rows = chunk_rows(ctx.attrs, d.n);
  std::vector<float> z(static_cast<size_t>(rows * d.v));
  std::vector<double> sum(static_cast<size_t>(d.segments), 0.0);
  for (int64_t r0 = 0; r0 < d.n; r0 += rows) {
    const int64_t r = std::min(rows, d.n - r0);
    chunk_logits(h.data<float>(), w.data<float>(), d, r0, r, z.data());
    for (int64_t i = 0; i < r; ++i) {
      const int32_t t = tp[r0 + i];
      if (!kmath::ce_counted(t, ignore)) continue;
      const float* zi = z.data() + i * d.v;
      const double l = kmath::ce_row_lse<double>(zi, d.v);
      lse.data<float>()[r0 + i] = static_cast<float>(l);
      sum[(r0 + i) / d.seg_rows] += zi[t] - l;
    }
  }
  const std::vector<int64_t> count = counted_per_segment(d, tp, ignore);
  Tensor out = Tensor::zeros(Shape{d.segments});
  for (int64_t g = 0; g < d.segments; ++g)
    out.data<float>()[g] = static_cast<float>(
        !ctx.attrs.segment_mean ? sum[g] : count[g] > 0 ? sum[g] / count[g] : 0.0);
  ctx.save({h, w, targets, lse});
  return {out};
}

std::vector<Tensor> lm_head_logprobs_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &h = ctx.saved[0], &w = ctx.saved[1], &targets = ctx.saved[2], &lse = ctx.saved[3];
  const Dims d = logprob_dims(ctx.attrs, h, w, targets);
  const int ignore = ctx.attrs.ignore_index;
  const int32_t* tp = targets.data<int32_t>();
  const bool want_dh = ctx.wants_grad(0), want_dw = ctx.wants_grad(1);
  Tensor dh = want_dh ? Tensor::zeros(h.shape()) : Tensor();
  Tensor dw = want_dw ? Tensor::zeros(w.shape()) : Tensor();
  if (!grad_out[0].defined()) return {dh, dw, Tensor()};
  const std::vector<float> g = grad_out[0].to_dtype(DType::F32).to_floats();
  const std::vector<int64_t> count = counted_per_segment(d, tp, ignore);
  auto coef = [&](int64_t n) {  // -c_n
    const int64_t s = n / d.seg_rows;
    const double c = ctx.attrs.segment_mean ? double(g[s]) / std::max<int64_t>(count[s], 1) : g[s];
    return -c;
  };
  const int64_t rows = chunk_rows(ctx.attrs, d.n);
  std::vector<float> z(static_cast<size_t>(rows * d.v));
  std::vector<double> dw_sum(want_dw ? static_cast<size_t>(d.v * d.h) : 0, 0.0);
  const float *hp = h.data<float>(), *wp = w.data<float>(), *lp = lse.data<float>();
  for (int64_t r0 = 0; r0 < d.n; r0 += rows) {
    const int64_t r = std::min(rows, d.n - r0);
    chunk_logits(hp, wp, d, r0, r, z.data());
    for (int64_t i = 0; i < r; ++i) {  // z becomes the chunk's dlogits (ignored rows: 0)
      const int32_t t = tp[r0 + i];
      const bool counted = kmath::ce_counted(t, ignore);
      const double c = counted ? coef(r0 + i) : 0.0;
      for (int64_t v = 0; v < d.v; ++v) {
        float& e = z[i * d.v + v];
        e = counted ? static_cast<float>(kmath::ce_dlogit<double>(e, lp[r0 + i], c, v == t)) : 0.0f;
      }
    }
    if (want_dh)
      for (int64_t i = 0; i < r; ++i)
        for (int64_t p = 0; p < d.h; ++p) {
          double s = 0;
          for (int64_t v = 0; v < d.v; ++v) s += static_cast<double>(z[i * d.v + v]) * wp[v * d.h + p];
          dh.data<float>()[(r0 + i) * d.h + p] = static_cast<float>(s);
        }
    if (want_dw)
      for (int64_t v = 0; v < d.v; ++v)
        for (int64_t p = 0; p < d.h; ++p) {
          double& s = dw_sum[v * d.h + p];
          for (int64_t i = 0; i < r; ++i) s += static_cast<double>(z[i * d.v + v]) * hp[(r0 + i) * d.h + p];
        }
  }
  if (want_dw)
    for (int64_t i = 0; i < d.v * d.h; ++i) dw.data<float>()[i] = static_cast<float>(dw_sum[i]);
  return {dh, dw, Tensor()};
}

}  // namespace engine::cpu
