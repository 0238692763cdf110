// CUDA implementation of the lm_head evaluation statistics (engine/lm_head_eval.h;
// math of the CPU reference in engine/cpu/lm_head_eval.cpp), f32 or bf16 h and W:
//
//   loss_n = lse(h_n W^T) - (h_n W^T)[t_n],   argmax_n = first index of max_v (h_n W^T)_v
//
// The [N, V] logits never exist: the tiling, the GEMMs and the per-row softmax statistics
// are lm_head_cross_entropy's forward (engine/cuda/lm_head_loss.cpp: the same plan,
// kernels::plan_lm_head_tiling without gradient buffers), with the running argmax added
// (kernels::ce_tile_stats_argmax). Row chunks without a counted row are skipped (their
// outputs are 0 and -1). Device memory besides the inputs: the outputs (8 bytes a row),
// the per-row state [5, N] fp32 and one fp32 tile [rows, vocab_block]. The targets are
// validated on the host (the copy synchronises the stream once).
#include <algorithm>
#include <vector>

#include "engine/backend.h"
#include "engine/cuda/cublaslt.h"
#include "engine/cuda/runtime.h"
#include "engine/lm_head_eval.h"
#include "kernels/cross_entropy.h"
#include "kernels/cross_entropy_tiling.h"
#include "kernels/elementwise.h"
#include "kernels/math/cross_entropy.h"

namespace engine::backend {

namespace {

constexpr const char* kOp = "lm_head_eval";

// Element `i` of a tensor's storage, as a typed or untyped device pointer.
template <class T = char>
T* at(const Tensor& t, int64_t i) {
  return reinterpret_cast<T*>(static_cast<char*>(t.raw_data()) +
                              i * static_cast<int64_t>(dtype_bits(t.dtype()) / 8));
}

}  // namespace

std::vector<Tensor> device_lm_head_eval(const Tensor& h, const Tensor& w, const Tensor& targets,
                                        int ignore, int64_t chunk_rows) {
  for (const Tensor* t : {&h, &w, &targets})
    ENGINE_CHECK(t->device().is_cuda(), kOp, ": inputs must be on a CUDA device, got ", t->str());
  ENGINE_CHECK(h.dtype() == w.dtype() && (h.dtype() == DType::F32 || h.dtype() == DType::BF16),
               kOp, ": h ", h.str(), " and weight ", w.str(), " must both be f32 or both bf16");
  ENGINE_CHECK(targets.dtype() == DType::I32, kOp, ": targets must be i32, got ", targets.str());
  ENGINE_CHECK(h.rank() == 2 && w.rank() == 2 && w.dim(1) == h.dim(1), kOp, ": h ",
               h.shape().str(), " and weight ", w.shape().str(), " are not [N, H] and [V, H]");
  ENGINE_CHECK(targets.rank() == 1 && targets.dim(0) == h.dim(0), kOp, ": targets ",
               targets.shape().str(), " do not match h ", h.shape().str());
  const int64_t n = h.dim(0), hd = h.dim(1), v = w.dim(0);
  ENGINE_CHECK(v > 0 && v <= 0x7fffffff, kOp, ": vocabulary of ", v, " entries");
  const DType type = h.dtype();
  const std::vector<int32_t> t = targets.to(Device::cpu()).to_ints();  // synchronises the stream
  for (int64_t i = 0; i < n; ++i)
    ENGINE_CHECK(!kmath::ce_counted(t[i], ignore) || (t[i] >= 0 && t[i] < v), kOp, ": target ",
                 t[i], " at row ", i, " is outside [0, ", v, ") and is not ignore_index ", ignore);
  const kernels::LmHeadTiling tile =
      kernels::plan_lm_head_tiling(n, v, hd, dtype_bits(type) / 8, false, false, chunk_rows);
  cudaStream_t stream = cuda::current_stream();
  const Device dev = h.device();
  Tensor loss = Tensor::zeros(Shape{n}, DType::F32, dev);  // 0 on ignored rows
  Tensor argmax = Tensor::empty(Shape{n}, DType::I32, dev);
  kernels::fill_u32(argmax.raw_data(), 0xffffffffu, n, stream);  // -1: rows of skipped chunks
  // Per row: running max, sum, z_t, lse (unused by evaluation), running argmax value.
  Tensor state = Tensor::empty(Shape{5, n}, DType::F32, dev);
  Tensor logits = Tensor::empty(Shape{tile.rows * tile.vocab_block}, DType::F32, dev);
  for (int64_t r0 = 0; r0 < n; r0 += tile.rows) {
    const int64_t rows = std::min(tile.rows, n - r0);
    bool counted = false;
    for (int64_t i = r0; i < r0 + rows; ++i) counted |= kmath::ce_counted(t[i], ignore);
    if (!counted) continue;
    for (int64_t v0 = 0; v0 < v; v0 += tile.vocab_block) {
      const int64_t cols = std::min(tile.vocab_block, v - v0);
      cuda::gemm(false, true, rows, cols, hd, 1.0f, at(h, r0 * hd), type, 0, at(w, v0 * hd), type,
                 0, 0.0f, logits.data<float>(), DType::F32, 0, 1, stream);
      kernels::ce_tile_stats_argmax(
          logits.data<float>(), rows, cols, v0, v0 == 0, v0 + tile.vocab_block >= v,
          at<const int32_t>(targets, r0), ignore, at<float>(state, r0), at<float>(state, n + r0),
          at<float>(state, 2 * n + r0), at<float>(state, 3 * n + r0), at<float>(loss, r0),
          at<float>(state, 4 * n + r0), at<int32_t>(argmax, r0), stream);
    }
  }
  return {loss, argmax};
}

}  // namespace engine::backend
