// CPU reference: causal grouped-query attention.
//
//   q [B, T, Hq, D], k and v [B, T, Hkv, D] (token-major, as x @ W^T reshapes them),
//   Hq % Hkv == 0, query head h reads KV head g = h / (Hq / Hkv).
//   scale = attrs.softmax_scale, or 1/sqrt(D) when it is 0.
//   Per (b, h), with rows i (queries) and columns j (keys), only j <= i:
//     S_ij = scale * q_i . k_j
//     P_ij = exp(S_ij - L_i),  L_i = log sum_j exp(S_ij)   (max-subtracted)
//     O_i  = sum_j P_ij v_j                                 out [B, T, Hq, D]
//
// Saved for backward: q, k, v, O and the per-row log-sum-exp L [B, Hq, T], as flash
// attention does; P is recomputed from q, k and L instead of being stored (T^2 per head).
//
// Backward, with dO the output gradient and Delta_i = sum_d dO_id O_id = sum_j P_ij dP_ij:
//   dV_j  = sum_i P_ij dO_i                 (O = P V)
//   dP_ij = dO_i . v_j
//   dS_ij = P_ij (dP_ij - Delta_i)          (softmax Jacobian: diag(p) - p p^T)
//   dQ_i  = scale sum_j dS_ij k_j,   dK_j = scale sum_i dS_ij q_i
// A KV head's dK and dV sum over the Hq / Hkv query heads that read it. Dot products
// and gradient sums accumulate in double, in a fixed loop order (deterministic).
//
// Packed sequences: the optional fourth input doc_start (i32 [B, T]) gives each token's
// document start, and row i sums over doc_start[b, i] <= j <= i only (documents never
// see each other; kmath::attn_doc_start_valid states the layout). Without it, 0 <= j.
#include <algorithm>
#include <cmath>

#include "engine/cpu/ops.h"
#include "engine/op_shapes.h"
#include "kernels/math/attention_tiles.h"
#include "kernels/math/online_softmax.h"

namespace engine::cpu {

namespace {

kmath::AttentionDims checked_dims(const Tensor& q, const Tensor& k, const Tensor& v) {
  require_f32(q, "attention", "q");
  require_f32(k, "attention", "k");
  require_f32(v, "attention", "v");
  return attention_dims(q.shape(), k.shape(), v.shape());
}

float softmax_scale(const OpAttrs& attrs, int64_t d) {
  if (attrs.softmax_scale != 0.0f) return attrs.softmax_scale;
  return static_cast<float>(1.0 / std::sqrt(double(d)));
}

// Per-row first visible key: doc_start (checked) or all zeros.
std::vector<int64_t> first_keys(const Tensor& ds, const kmath::AttentionDims& s) {
  std::vector<int64_t> first(static_cast<size_t>(s.batch * s.seq), 0);
  if (!ds.defined()) return first;
  ENGINE_CHECK(ds.dtype() == DType::I32 && ds.shape() == Shape({s.batch, s.seq}),
               "attention: doc_start must be i32 [", s.batch, ", ", s.seq, "], got ", ds.str());
  const int32_t* dp = ds.data<int32_t>();
  for (int64_t b = 0; b < s.batch; ++b)
    ENGINE_CHECK(kmath::attn_doc_start_valid(dp + b * s.seq, s.seq),
                 "attention: doc_start of batch entry ", b,
                 " is not a sequence of contiguous documents");
  for (size_t i = 0; i < first.size(); ++i) first[i] = dp[i];
  return first;
}

double dot(const float* x, const float* y, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * y[i];
  return s;
}

}  // namespace

std::vector<Tensor> attention_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &q = in[0], &k = in[1], &v = in[2];
  const kmath::AttentionDims s = checked_dims(q, k, v);
  const double scale = softmax_scale(ctx.attrs, s.head_dim);
  Tensor out = Tensor::empty(q.shape());
  Tensor lse = Tensor::empty(Shape{s.batch, s.q_heads, s.seq});
  const float *qp = q.data<float>(), *kp = k.data<float>(), *vp = v.data<float>();
  float *op = out.data<float>(), *lp = lse.data<float>();
  const std::vector<int64_t> first = first_keys(in.size() > 3 ? in[3] : Tensor(), s);

  std::vector<double> scores(static_cast<size_t>(s.seq)), acc(static_cast<size_t>(s.head_dim));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.q_heads; ++h) {
      const int64_t g = h / s.group();
      for (int64_t i = 0; i < s.seq; ++i) {
        const float* qi = qp + s.q_at(b, i, h);
        kmath::OnlineSoftmax<double> row;  // running max and sum (kernels/math/online_softmax.h)
        const int64_t j0 = first[b * s.seq + i];
        for (int64_t j = j0; j <= i; ++j) {  // causal: keys up to and including i
          scores[j] = scale * dot(qi, kp + s.kv_at(b, j, g), s.head_dim);
          row.add(scores[j]);
        }
        const double l = row.lse();
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = j0; j <= i; ++j) {
          const double p = std::exp(scores[j] - l);
          const float* vj = vp + s.kv_at(b, j, g);
          for (int64_t e = 0; e < s.head_dim; ++e) acc[e] += p * vj[e];
        }
        float* oi = op + s.q_at(b, i, h);
        for (int64_t e = 0; e < s.head_dim; ++e) oi[e] = static_cast<float>(acc[e]);
        lp[s.lse_at(b, h, i)] = static_cast<float>(l);
      }
    }
  ctx.save({q, k, v, out, lse});
  if (in.size() > 3) ctx.save({in[3]});
  return {out};
}

std::vector<Tensor> attention_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &q = ctx.saved[0], &k = ctx.saved[1], &v = ctx.saved[2];
  const Tensor &out = ctx.saved[3], &lse = ctx.saved[4];
  const kmath::AttentionDims s = checked_dims(q, k, v);
  const double scale = softmax_scale(ctx.attrs, s.head_dim);
  const Tensor go = grad_or_zeros(grad_out[0], q.shape());
  ENGINE_CHECK(go.shape() == q.shape(), "attention: output gradient ", go.shape().str(),
               " does not match output ", q.shape().str());
  const float *qp = q.data<float>(), *kp = k.data<float>(), *vp = v.data<float>();
  const float *op = out.data<float>(), *lp = lse.data<float>(), *gp = go.data<float>();
  const std::vector<int64_t> first = first_keys(ctx.saved.size() > 5 ? ctx.saved[5] : Tensor(), s);

  // Double accumulators: dK, dV collect T * group terms per element.
  std::vector<double> dq(static_cast<size_t>(q.numel()), 0.0);
  std::vector<double> dk(static_cast<size_t>(k.numel()), 0.0);
  std::vector<double> dv(static_cast<size_t>(v.numel()), 0.0);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.q_heads; ++h) {
      const int64_t g = h / s.group();
      for (int64_t i = 0; i < s.seq; ++i) {
        const float* qi = qp + s.q_at(b, i, h);
        const float* doi = gp + s.q_at(b, i, h);
        const double l = lp[s.lse_at(b, h, i)];
        const double delta = dot(doi, op + s.q_at(b, i, h), s.head_dim);
        for (int64_t j = first[b * s.seq + i]; j <= i; ++j) {
          const float* kj = kp + s.kv_at(b, j, g);
          const float* vj = vp + s.kv_at(b, j, g);
          const double p = std::exp(scale * dot(qi, kj, s.head_dim) - l);  // recomputed P_ij
          const double ds = p * (dot(doi, vj, s.head_dim) - delta);
          for (int64_t e = 0; e < s.head_dim; ++e) {
            dv[s.kv_at(b, j, g) + e] += p * doi[e];
            dq[s.q_at(b, i, h) + e] += scale * ds * kj[e];
            dk[s.kv_at(b, j, g) + e] += scale * ds * qi[e];
          }
        }
      }
    }

  auto to_tensor = [](const std::vector<double>& x, const Shape& shape) {
    Tensor t = Tensor::empty(shape);
    for (size_t i = 0; i < x.size(); ++i) t.data<float>()[i] = static_cast<float>(x[i]);
    return t;
  };
  // doc_start is an index: no gradient (OpNode drops the fourth slot).
  return {to_tensor(dq, q.shape()), to_tensor(dk, k.shape()), to_tensor(dv, v.shape())};
}

}  // namespace engine::cpu
