// CPU reference of the lm_head evaluation statistics (engine/lm_head_eval.h):
//
//   z_n = h_n W^T,  loss_n = lse(z_n) - z_n[t_n],  argmax_n = first index of max z_n
//
// in chunks of chunk_rows rows (0: N / 32, at least 1), so only a [chunk, V] block of
// logits exists. The arithmetic is lm_head_cross_entropy's reference (engine/cpu/
// lm_head_loss.cpp): each logit a double dot product rounded to float, lse in double
// (kmath::ce_row_lse), loss_n = float(lse - z_t). The argmax walks v = 0, 1, ... with
// kmath::ce_argmax_add, the rule the kernels merge by.
#include <algorithm>
#include <vector>

#include "engine/cpu/ops.h"
#include "engine/lm_head_eval.h"
#include "kernels/math/cross_entropy.h"

namespace engine::cpu {

namespace {
constexpr const char* kOp = "lm_head_eval";
}  // namespace

LmHeadEval lm_head_eval(const Tensor& h, const Tensor& w, const Tensor& targets, int ignore,
                        int64_t chunk_rows) {
  require_f32(h, kOp, "h");
  require_f32(w, kOp, "weight");
  ENGINE_CHECK(targets.dtype() == DType::I32, kOp, ": targets must be i32, got ", targets.str());
  ENGINE_CHECK(h.rank() == 2 && w.rank() == 2 && w.dim(1) == h.dim(1), kOp, ": h ",
               h.shape().str(), " and weight ", w.shape().str(), " are not [N, H] and [V, H]");
  ENGINE_CHECK(targets.rank() == 1 && targets.dim(0) == h.dim(0), kOp, ": targets ",
               targets.shape().str(), " do not match h ", h.shape().str());
  const int64_t n = h.dim(0), hd = h.dim(1), v = w.dim(0);
  ENGINE_CHECK(v > 0 && v <= 0x7fffffff, kOp, ": vocabulary of ", v, " entries");
  const int32_t* tp = targets.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    ENGINE_CHECK(!kmath::ce_counted(tp[i], ignore) || (tp[i] >= 0 && tp[i] < v), kOp, ": target ",
                 tp[i], " at row ", i, " is outside [0, ", v, ") and is not ignore_index ", ignore);
  LmHeadEval out{Tensor::zeros(Shape{n}), Tensor::from_ints(std::vector<int32_t>(n, -1), Shape{n})};
  const int64_t rows =
      std::clamp<int64_t>(chunk_rows > 0 ? chunk_rows : n / 32, 1, std::max<int64_t>(n, 1));
  std::vector<float> z(static_cast<size_t>(rows * v));
  const float *hp = h.data<float>(), *wp = w.data<float>();
  float* loss = out.loss.data<float>();
  int32_t* arg = out.argmax.data<int32_t>();
  for (int64_t r0 = 0; r0 < n; r0 += rows) {
    const int64_t r = std::min(rows, n - r0);
    bool any = false;
    for (int64_t i = r0; i < r0 + r; ++i) any |= kmath::ce_counted(tp[i], ignore);
    if (!any) continue;
    for (int64_t i = 0; i < r; ++i)
      for (int64_t c = 0; c < v; ++c) {
        double s = 0;
        for (int64_t p = 0; p < hd; ++p)
          s += static_cast<double>(hp[(r0 + i) * hd + p]) * wp[c * hd + p];
        z[i * v + c] = static_cast<float>(s);
      }
    for (int64_t i = 0; i < r; ++i) {
      const int32_t t = tp[r0 + i];
      if (!kmath::ce_counted(t, ignore)) continue;
      const float* zi = z.data() + i * v;
      loss[r0 + i] = static_cast<float>(kmath::ce_row_lse<double>(zi, v) - zi[t]);
      kmath::CeArgmax best = kmath::ce_argmax_empty();
      for (int64_t c = 0; c < v; ++c) best = kmath::ce_argmax_add(best, zi[c], static_cast<int32_t>(c));
      arg[r0 + i] = best.index;
    }
  }
  return out;
}

}  // namespace engine::cpu
