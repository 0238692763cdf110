// The shared part of the fused lm_head ops' CPU references (engine/cpu/lm_head_rows.h).
#include "engine/cpu/lm_head_rows.h"

#include <algorithm>

#include "engine/cpu/ops.h"
#include "kernels/math/cross_entropy.h"

namespace engine::cpu {

LmHeadDims lm_head_dims(const char* op, const Tensor& h, const Tensor& w, const Tensor& targets, int ignore) {
  require_f32(h, op, "h");
  require_f32(w, op, "weight");
  ENGINE_CHECK(targets.dtype() == DType::I32, op, ": targets must be i32, got ", targets.str());
  ENGINE_CHECK(h.rank() == 2 && w.rank() == 2 && w.dim(1) == h.dim(1), op, ": h ", h.shape().str(),
               " and weight ", w.shape().str(), " are not [N, H] and [V, H]");
  ENGINE_CHECK(targets.rank() == 1 && targets.dim(0) == h.dim(0), op, ": targets ", targets.shape().str(),
               " do not match h ", h.shape().str());
  const LmHeadDims d{h.dim(0), h.dim(1), w.dim(0)};
  // Vocabulary indices are int32 (targets, argmax), as in the kernels.
  ENGINE_CHECK(d.v > 0 && d.v <= 0x7fffffff, op, ": vocabulary of ", d.v, " entries");
  const int32_t* tp = targets.data<int32_t>();
  for (int64_t n = 0; n < d.n; ++n)
    ENGINE_CHECK(!kmath::ce_counted(tp[n], ignore) || (tp[n] >= 0 && tp[n] < d.v), op, ": target ", tp[n],
                 " at row ", n, " is outside [0, ", d.v, ") and is not ignore_index ", ignore);
  return d;
}

int64_t lm_head_chunk_rows(int64_t chunk_rows, int64_t n) {
  return std::clamp<int64_t>(chunk_rows > 0 ? chunk_rows : n / 32, 1, std::max<int64_t>(n, 1));
}

void for_each_logit_chunk(const LmHeadDims& d, const Tensor& h, const Tensor& w, const Tensor& targets,
                          int ignore, int64_t chunk_rows,
                          const std::function<void(int64_t r0, int64_t rows, float* z)>& visit) {
  const int64_t rows = lm_head_chunk_rows(chunk_rows, d.n);
  std::vector<float> z(static_cast<size_t>(rows * d.v));
  const float *hp = h.data<float>(), *wp = w.data<float>();
  const int32_t* tp = targets.data<int32_t>();
  for (int64_t r0 = 0; r0 < d.n; r0 += rows) {
    const int64_t r = std::min(rows, d.n - r0);
    bool counted = false;
    for (int64_t i = r0; i < r0 + r; ++i) counted |= kmath::ce_counted(tp[i], ignore);
    if (!counted) continue;  // nothing of it is used
    for (int64_t i = 0; i < r; ++i)
      for (int64_t v = 0; v < d.v; ++v) {
        double s = 0;
        for (int64_t p = 0; p < d.h; ++p) s += static_cast<double>(hp[(r0 + i) * d.h + p]) * wp[v * d.h + p];
        z[static_cast<size_t>(i * d.v + v)] = static_cast<float>(s);
      }
    visit(r0, r, z.data());
  }
}

std::vector<Tensor> lm_head_backward(const LmHeadDims& d, const Tensor& h, const Tensor& w, const Tensor& targets,
                                     const Tensor& lse, int ignore, int64_t chunk_rows, bool want_dh, bool want_dw,
                                     const std::function<double(int64_t n)>& coef) {
  Tensor dh = want_dh ? Tensor::zeros(h.shape()) : Tensor();
  Tensor dw = want_dw ? Tensor::zeros(w.shape()) : Tensor();
  std::vector<double> dw_sum(want_dw ? static_cast<size_t>(d.v * d.h) : 0, 0.0);
  const float *hp = h.data<float>(), *wp = w.data<float>(), *lp = lse.data<float>();
  const int32_t* tp = targets.data<int32_t>();
  for_each_logit_chunk(d, h, w, targets, ignore, chunk_rows, [&](int64_t r0, int64_t r, float* dz) {
    // The logits become the chunk's dlogits in place (ignored rows: 0).
    for (int64_t i = 0; i < r; ++i) {
      const int32_t t = tp[r0 + i];
      const bool counted = kmath::ce_counted(t, ignore);
      const double c = counted ? coef(r0 + i) : 0.0;
      for (int64_t v = 0; v < d.v; ++v) {
        float& e = dz[static_cast<size_t>(i * d.v + v)];
        e = counted ? static_cast<float>(kmath::ce_dlogit<double>(e, lp[r0 + i], c, v == t)) : 0.0f;
      }
    }
    if (want_dh)
      for (int64_t i = 0; i < r; ++i)
        for (int64_t p = 0; p < d.h; ++p) {
          double s = 0;
          for (int64_t v = 0; v < d.v; ++v) s += static_cast<double>(dz[i * d.v + v]) * wp[v * d.h + p];
          dh.data<float>()[(r0 + i) * d.h + p] = static_cast<float>(s);
        }
    if (want_dw)  // rows in order: the same double sums as one unchunked pass
      for (int64_t v = 0; v < d.v; ++v)
        for (int64_t p = 0; p < d.h; ++p) {
          double& s = dw_sum[static_cast<size_t>(v * d.h + p)];
          for (int64_t i = 0; i < r; ++i) s += static_cast<double>(dz[i * d.v + v]) * hp[(r0 + i) * d.h + p];
        }
  });
  if (want_dw)
    for (int64_t i = 0; i < d.v * d.h; ++i) dw.data<float>()[i] = static_cast<float>(dw_sum[i]);
  return {dh, dw, Tensor()};
}

}  // namespace engine::cpu
