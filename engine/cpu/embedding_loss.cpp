// CPU reference: embedding lookup and cross-entropy loss.
//
// embedding: ids i32 of any shape S (rank <= 3), table [V, D] f32 -> out [S..., D],
//   out[n] = table[ids[n]]. Every id must lie in [0, V).
//   Backward: only the table gets a gradient (ids are integers):
//     dtable[r] = sum over n with ids[n] == r of dout[n]
//   scatter-added in index order n = 0, 1, ... so the result is deterministic.
//   Saved: ids.
//
// cross_entropy: logits [N, V] f32, targets i32 [N]. Row n is counted unless
//   targets[n] == ignore_index; every other target must lie in [0, V).
//     L_n  = logsumexp(x_n) - x_n[t_n]        (max-subtracted logsumexp)
//     loss = (1 / C) sum over counted n of L_n,   C = number of counted rows; 0 if C == 0
//   out shape [] (a scalar).
//   Backward: d L_n / d x_nv = softmax(x_n)_v - [v == t_n], so with g = dloss
//     dlogits[n] = g / C * (softmax(x_n) - onehot(t_n))  for counted rows, 0 for ignored.
//   Saved: logits, targets and the per-row logsumexp [N] (softmax is recomputed as
//   exp(x - lse), so no [N, V] probability matrix is kept).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "engine/cpu/ops.h"
#include "engine/op_shapes.h"

namespace engine::cpu {

namespace {

void require_i32(const Tensor& t, const char* op, const char* what) {
  ENGINE_CHECK(t.dtype() == DType::I32, op, ": ", what, " must be i32, got ", t.str());
}

bool counted(int32_t target, int ignore_index) { return target != ignore_index; }

struct CeDims {
  int64_t n, v;
};

CeDims cross_entropy_dims(const Tensor& logits, const Tensor& targets) {
  require_f32(logits, "cross_entropy", "logits");
  require_i32(targets, "cross_entropy", "targets");
  ENGINE_CHECK(logits.rank() == 2, "cross_entropy: logits must be [N, V], got ",
               logits.shape().str());
  ENGINE_CHECK(targets.rank() == 1 && targets.dim(0) == logits.dim(0),
               "cross_entropy: targets ", targets.shape().str(), " do not match logits ",
               logits.shape().str());
  return {logits.dim(0), logits.dim(1)};
}

}  // namespace

std::vector<Tensor> embedding_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &ids = in[0], &table = in[1];
  require_i32(ids, "embedding", "ids");
  require_f32(table, "embedding", "table");
  ENGINE_CHECK(table.rank() == 2, "embedding: table must be [V, D], got ", table.shape().str());
  const int64_t vocab = table.dim(0), d = table.dim(1);
  Tensor out = Tensor::empty(embedding_output_shape(ids.shape(), d));
  const int32_t* idp = ids.data<int32_t>();
  const float* tp = table.data<float>();
  float* op = out.data<float>();
  for (int64_t n = 0; n < ids.numel(); ++n) {
    const int64_t id = idp[n];
    ENGINE_CHECK(id >= 0 && id < vocab, "embedding: id ", id, " at ids", index_text(ids.shape(), n),
                 " is outside the table's [0, ", vocab, ")");
    std::copy(tp + id * d, tp + (id + 1) * d, op + n * d);
  }
  ctx.save({ids});
  return {out};
}

std::vector<Tensor> embedding_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor& ids = ctx.saved[0];
  const Shape& table_shape = ctx.input_shapes[1];
  const int64_t d = table_shape[1];
  Tensor dtable = Tensor::zeros(table_shape);
  if (!grad_out[0].defined()) return {Tensor(), dtable};
  const int32_t* idp = ids.data<int32_t>();
  const float* gp = grad_out[0].data<float>();
  float* dp = dtable.data<float>();
  for (int64_t n = 0; n < ids.numel(); ++n)  // index order: deterministic sums
    for (int64_t e = 0; e < d; ++e) dp[idp[n] * d + e] += gp[n * d + e];
  return {Tensor(), dtable};
}

std::vector<Tensor> cross_entropy_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  const Tensor &logits = in[0], &targets = in[1];
  const CeDims s = cross_entropy_dims(logits, targets);
  const int ignore = ctx.attrs.ignore_index;
  const float* xp = logits.data<float>();
  const int32_t* tp = targets.data<int32_t>();
  Tensor lse = Tensor::zeros(Shape{s.n});  // 0 for ignored rows (never read)
  double total = 0;
  int64_t count = 0;
  for (int64_t n = 0; n < s.n; ++n) {
    const int32_t t = tp[n];
    if (!counted(t, ignore)) continue;
    ENGINE_CHECK(t >= 0 && t < s.v, "cross_entropy: target ", t, " at row ", n,
                 " is outside [0, ", s.v, ") and is not ignore_index ", ignore);
    const float* x = xp + n * s.v;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < s.v; ++j) m = std::max(m, static_cast<double>(x[j]));
    double denom = 0;
    for (int64_t j = 0; j < s.v; ++j) denom += std::exp(x[j] - m);
    const double l = m + std::log(denom);
    lse.data<float>()[n] = static_cast<float>(l);
    total += l - x[t];
    ++count;
  }
  ctx.save({logits, targets, lse});
  return {Tensor::full(Shape{}, count > 0 ? static_cast<float>(total / count) : 0.0f)};
}

std::vector<Tensor> cross_entropy_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &logits = ctx.saved[0], &targets = ctx.saved[1], &lse = ctx.saved[2];
  const CeDims s = cross_entropy_dims(logits, targets);
  const int ignore = ctx.attrs.ignore_index;
  const int32_t* tp = targets.data<int32_t>();
  int64_t count = 0;
  for (int64_t n = 0; n < s.n; ++n) count += counted(tp[n], ignore);
  Tensor dlogits = Tensor::zeros(logits.shape());
  if (count == 0 || !grad_out[0].defined()) return {dlogits, Tensor()};
  const double coef = static_cast<double>(grad_out[0].item()) / count;
  const float *xp = logits.data<float>(), *lp = lse.data<float>();
  float* dp = dlogits.data<float>();
  for (int64_t n = 0; n < s.n; ++n) {
    if (!counted(tp[n], ignore)) continue;  // ignored rows keep their zero gradient
    const float* x = xp + n * s.v;
    float* dx = dp + n * s.v;
    for (int64_t j = 0; j < s.v; ++j) {
      const double p = std::exp(static_cast<double>(x[j]) - lp[n]);
      dx[j] = static_cast<float>(coef * (p - (j == tp[n] ? 1.0 : 0.0)));
    }
  }
  return {dlogits, Tensor()};
}

}  // namespace engine::cpu
