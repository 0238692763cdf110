// CUDA implementation of the lm_head evaluation statistics (engine/lm_head_eval.h;
// math of the CPU reference in engine/cpu/lm_head_eval.cpp), f32 or bf16 h and W:
//
//   loss_n = lse(h_n W^T) - (h_n W^T)[t_n],   argmax_n = first index of max_v (h_n W^T)_v
//
// The [N, V] logits never exist: the tiling, the GEMMs and the per-row softmax statistics
// are lm_head_cross_entropy's forward (engine/cuda/lm_head_tiles.h: the same plan,
// without gradient buffers), with the running argmax added
// (kernels::ce_tile_stats_argmax). Row chunks without a counted row are skipped (their
// outputs are 0 and -1). Device memory besides the inputs: the outputs (8 bytes a row),
// the per-row state [5, N] fp32 and one fp32 tile [rows, vocab_block]. The targets are
// validated on the host (the copy synchronises the stream once).
#include <vector>

#include "engine/backend.h"
#include "engine/cuda/lm_head_tiles.h"
#include "engine/cuda/runtime.h"
#include "engine/lm_head_eval.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"

namespace engine::backend {

std::vector<Tensor> device_lm_head_eval(const Tensor& h, const Tensor& w, const Tensor& targets,
                                        int ignore, int64_t chunk_rows) {
  using namespace cuda_ops;
  constexpr const char* kOp = "lm_head_eval";
  const LmHeadProblem p = make_lm_head_problem(kOp, h, w, targets, false, false, chunk_rows);
  const std::vector<int32_t> t = checked_targets(kOp, targets.to(Device::cpu()), p.v, ignore);  // synchronises
  const int64_t n = p.n;
  cudaStream_t stream = cuda::current_stream();
  const Device dev = h.device();
  Tensor loss = Tensor::zeros(Shape{n}, DType::F32, dev);  // 0 on ignored rows
  Tensor argmax = Tensor::empty(Shape{n}, DType::I32, dev);
  kernels::fill_u32(argmax.raw_data(), 0xffffffffu, n, stream);  // -1: rows of skipped chunks
  // Per row: running max, sum, z_t, lse (unused by evaluation), running argmax value.
  Tensor state = Tensor::empty(Shape{5, n}, DType::F32, dev);
  for_each_logit_tile(p, h, w, t, ignore, [&](const LogitTile& z) {
    kernels::ce_tile_stats_argmax(z.z, z.rows, z.cols, z.v0, z.first, z.last, element<const int32_t>(targets, z.r0),
                                  ignore, element<float>(state, z.r0), element<float>(state, n + z.r0),
                                  element<float>(state, 2 * n + z.r0), element<float>(state, 3 * n + z.r0),
                                  element<float>(loss, z.r0), element<float>(state, 4 * n + z.r0),
                                  element<int32_t>(argmax, z.r0), stream);
  });
  return {loss, argmax};
}

}  // namespace engine::backend
