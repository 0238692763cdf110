// CPU reference of the lm_head evaluation statistics (engine/lm_head_eval.h):
//
//   z_n = h_n W^T,  loss_n = lse(z_n) - z_n[t_n],  argmax_n = first index of max z_n
//
// in chunks of chunk_rows rows (0: N / 32, at least 1), so only a [chunk, V] block of
// logits exists. The arithmetic is lm_head_cross_entropy's reference (engine/cpu/
// lm_head_loss.cpp): each logit a double dot product rounded to float, lse in double
// (kmath::ce_row_lse), loss_n = float(lse - z_t). The argmax walks v = 0, 1, ... with
// kmath::ce_argmax_add, the rule the kernels merge by.
#include <vector>

#include "engine/cpu/lm_head_rows.h"
#include "engine/lm_head_eval.h"
#include "kernels/math/cross_entropy.h"

namespace engine::cpu {

LmHeadEval lm_head_eval(const Tensor& h, const Tensor& w, const Tensor& targets, int ignore,
                        int64_t chunk_rows) {
  const LmHeadDims d = lm_head_dims("lm_head_eval", h, w, targets, ignore);
  LmHeadEval out{Tensor::zeros(Shape{d.n}), Tensor::from_ints(std::vector<int32_t>(d.n, -1), Shape{d.n})};
  const int32_t* tp = targets.data<int32_t>();
  float* loss = out.loss.data<float>();
  int32_t* arg = out.argmax.data<int32_t>();
  for_each_logit_chunk(d, h, w, targets, ignore, chunk_rows, [&](int64_t r0, int64_t r, float* z) {
    for (int64_t i = 0; i < r; ++i) {
      const int32_t t = tp[r0 + i];
      if (!kmath::ce_counted(t, ignore)) continue;
      const float* zi = z + i * d.v;
      loss[r0 + i] = static_cast<float>(kmath::ce_row_lse<double>(zi, d.v) - zi[t]);
      kmath::CeArgmax best = kmath::ce_argmax_empty();
      for (int64_t c = 0; c < d.v; ++c) best = kmath::ce_argmax_add(best, zi[c], static_cast<int32_t>(c));
      arg[r0 + i] = best.index;
    }
  });
  return out;
}

}  // namespace engine::cpu
