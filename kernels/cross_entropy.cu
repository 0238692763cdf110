// Cross-entropy kernels for the fused lm_head cross-entropy: the logits of one tile
// [rows, cols] (fp32, from a cuBLASLt GEMM) are reduced to per-row softmax statistics
// in the forward pass and turned into the logits' gradient in the backward pass. The
// [N, V] logits never exist as a whole (engine/cuda/lm_head_loss.cpp walks the
// tiles).
//
// Math (kernels/math/cross_entropy.h, shared with the CPU reference):
//   stats   per row, over the tile's columns: the running state (m, s) with
//           s = sum exp(z - m), merged into the row's state from earlier vocab blocks;
//           the last block writes lse = m + log s and row_loss = lse - z_target.
//   grad    d = (g / C) (exp(z - lse) - [v == target]) on counted rows, 0 on ignored
//           rows; fp32 in place, or as the bf16 split hi + lo (2^-16 relative).
//   mean    loss = sum_n row_loss[n] / C (double accumulation), 0 when C == 0.
//   argmax  (evaluation, ce_tile_stats_argmax) the same pass also folds each element
//           into a running (value, index), kmath::ce_argmax_merge: the first index of
//           the row's maximum, whatever the merge order.
//
// Layout and grid:
//   stats, grad   one block of 256 threads per row; thread i handles columns
//                 i, i + 256, ... (coalesced: a warp reads 32 consecutive floats).
//                 stats merges the threads' states with warp butterflies and then
//                 warp by warp in index order, so the result depends only on the
//                 launch shape, never on timing (deterministic).
//   mean          one block of 256 threads: thread i sums rows i, i + 256, ... in
//                 double, then a fixed shared-memory tree.
// The per-row state arrays are read and written by thread 0 of the row's block only;
// successive tiles are ordered by the stream. All math is fp32 (expf, logf: a few ulp),
// except the final mean in double.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/check.h"
#include "kernels/cross_entropy.h"
#include "kernels/launch_utils.cuh"
#include "kernels/math/bf16.h"
#include "kernels/math/cross_entropy.h"

namespace kernels {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
static_assert(kThreads % 32 == 0 && kWarps <= 32, "block = whole warps");

__device__ kmath::CeStats warp_merge(kmath::CeStats a) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    kmath::CeStats b{__shfl_xor_sync(0xffffffffu, a.m, offset),
                     __shfl_xor_sync(0xffffffffu, a.s, offset)};
    a = kmath::ce_stats_merge(a, b);
  }
  return a;
}

__device__ kmath::CeArgmax warp_merge(kmath::CeArgmax a) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    kmath::CeArgmax b{__shfl_xor_sync(0xffffffffu, a.value, offset),
                      __shfl_xor_sync(0xffffffffu, a.index, offset)};
    a = kmath::ce_argmax_merge(a, b);
  }
  return a;
}

// kArgmax: also the running argmax (arg_value, arg_index; -1 on ignored rows at the end).
template <bool kArgmax>
__global__ void __launch_bounds__(kThreads)
    ce_tile_stats_kernel(const float* __restrict__ logits, int64_t cols, int64_t col_offset,
                         bool first_block, bool last_block, const int32_t* __restrict__ targets,
                         int ignore_index, float* run_max, float* run_sum, float* target_logit,
                         float* lse, float* row_loss, float* arg_value, int32_t* arg_index) {
  KERNELS_SHARED(float[kWarps], warp_m);
  KERNELS_SHARED(float[kWarps], warp_s);
  KERNELS_SHARED(float[kWarps], warp_av);
  KERNELS_SHARED(int32_t[kWarps], warp_ai);
  const int64_t row = blockIdx.x;
  const int32_t target = targets[row];
  if (!kmath::ce_counted(target, ignore_index)) {  // uniform over the block
    if (last_block && threadIdx.x == 0) {
      lse[row] = row_loss[row] = 0.0f;
      if (kArgmax) arg_index[row] = -1;
    }
    return;
  }
  const float* z = logits + row * cols;
  kmath::CeStats st = kmath::ce_stats_empty();
  kmath::CeArgmax am = kmath::ce_argmax_empty();
  for (int64_t j = threadIdx.x; j < cols; j += kThreads) {
    st = kmath::ce_stats_add(st, z[j]);
    if (kArgmax) am = kmath::ce_argmax_add(am, z[j], static_cast<int32_t>(col_offset + j));
  }
  st = warp_merge(st);
  if (kArgmax) am = warp_merge(am);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    warp_m[warp] = st.m;
    warp_s[warp] = st.s;
    if (kArgmax) {
      warp_av[warp] = am.value;
      warp_ai[warp] = am.index;
    }
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  kmath::CeStats tile = {warp_m[0], warp_s[0]};
  for (int w = 1; w < kWarps; ++w) tile = kmath::ce_stats_merge(tile, {warp_m[w], warp_s[w]});
  const kmath::CeStats run =
      first_block ? tile : kmath::ce_stats_merge({run_max[row], run_sum[row]}, tile);
  if (kArgmax) {
    kmath::CeArgmax best = first_block ? kmath::ce_argmax_empty()
                                       : kmath::CeArgmax{arg_value[row], arg_index[row]};
    for (int w = 0; w < kWarps; ++w) best = kmath::ce_argmax_merge(best, {warp_av[w], warp_ai[w]});
    arg_value[row] = best.value;
    arg_index[row] = best.index;
  }
  if (target >= col_offset && target - col_offset < cols) target_logit[row] = z[target - col_offset];
  if (last_block) {
    const float l = kmath::ce_stats_lse(run);
    lse[row] = l;
    row_loss[row] = l - target_logit[row];
  } else {
    run_max[row] = run.m;
    run_sum[row] = run.s;
  }
}

__global__ void __launch_bounds__(kThreads)
    ce_tile_grad_kernel(float* logits, uint16_t* d_hi, uint16_t* d_lo, int64_t cols,
                        int64_t col_offset, const int32_t* __restrict__ targets, int ignore_index,
                        const float* __restrict__ lse, const float* __restrict__ dloss,
                        float count) {
  const int64_t row = blockIdx.x;
  const int32_t target = targets[row];
  const bool counted = kmath::ce_counted(target, ignore_index);
  const float coef = dloss[0] / count;
  const float l = counted ? lse[row] : 0.0f;
  const int64_t local_target = counted ? int64_t(target) - col_offset : -1;
  float* z = logits + row * cols;
  for (int64_t j = threadIdx.x; j < cols; j += kThreads) {
    const float d = counted ? kmath::ce_dlogit(z[j], l, coef, j == local_target) : 0.0f;
    if (d_hi == nullptr) {
      z[j] = d;
    } else {
      kmath::ce_split_bf16(d, d_hi + row * cols + j, d_lo + row * cols + j);
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    ce_mean_loss_kernel(void* out, bool out_bf16, const float* __restrict__ row_loss, int64_t n,
                        int64_t count) {
  KERNELS_SHARED(double[kThreads], partial);
  double sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) sum += row_loss[i];
  sum = detail::block_sum_double<kThreads>(sum, partial);
  if (threadIdx.x != 0) return;
  const float loss = count > 0 ? static_cast<float>(sum / static_cast<double>(count)) : 0.0f;
  if (out_bf16) *static_cast<uint16_t*>(out) = kmath::float_to_bf16_bits(loss);
  else *static_cast<float*>(out) = loss;
}

void check_tile(const char* name, const void* logits, int64_t rows, int64_t cols,
                const int32_t* targets) {
  KERNELS_CHECK(rows >= 0 && cols > 0, name, ": bad tile ", rows, " x ", cols);
  KERNELS_CHECK(rows <= 0x7fffffff, name, ": ", rows, " rows exceed the grid");
  KERNELS_CHECK(rows == 0 || (logits != nullptr && targets != nullptr), name, ": null pointer");
}

}  // namespace

void ce_tile_stats(const float* logits, int64_t rows, int64_t cols, int64_t col_offset,
                   bool first_block, bool last_block, const int32_t* targets, int ignore_index,
                   float* run_max, float* run_sum, float* target_logit, float* lse,
                   float* row_loss, cudaStream_t stream) {
  check_tile("ce_tile_stats", logits, rows, cols, targets);
  KERNELS_CHECK(rows == 0 || (run_max && run_sum && target_logit && lse && row_loss),
                "ce_tile_stats: null state pointer");
  if (rows == 0) return;
  ptx::launch(ce_tile_stats_kernel<false>, static_cast<unsigned>(rows), kThreads, 0, stream, logits,
              cols, col_offset, first_block, last_block, targets, ignore_index, run_max, run_sum,
              target_logit, lse, row_loss, static_cast<float*>(nullptr), static_cast<int32_t*>(nullptr));
  CUDA_CHECK_LAUNCH("ce_tile_stats");
}

void ce_tile_stats_argmax(const float* logits, int64_t rows, int64_t cols, int64_t col_offset,
                          bool first_block, bool last_block, const int32_t* targets,
                          int ignore_index, float* run_max, float* run_sum, float* target_logit,
                          float* lse, float* row_loss, float* arg_value, int32_t* arg_index,
                          cudaStream_t stream) {
  check_tile("ce_tile_stats_argmax", logits, rows, cols, targets);
  KERNELS_CHECK(rows == 0 || (run_max && run_sum && target_logit && lse && row_loss && arg_value &&
                              arg_index),
                "ce_tile_stats_argmax: null state pointer");
  KERNELS_CHECK(col_offset >= 0 && col_offset + cols <= 0x7fffffff,
                "ce_tile_stats_argmax: vocabulary index ", col_offset + cols, " exceeds i32");
  if (rows == 0) return;
  ptx::launch(ce_tile_stats_kernel<true>, static_cast<unsigned>(rows), kThreads, 0, stream, logits,
              cols, col_offset, first_block, last_block, targets, ignore_index, run_max, run_sum,
              target_logit, lse, row_loss, arg_value, arg_index);
  CUDA_CHECK_LAUNCH("ce_tile_stats_argmax");
}

void ce_tile_grad(float* logits, uint16_t* d_hi, uint16_t* d_lo, int64_t rows, int64_t cols,
                  int64_t col_offset, const int32_t* targets, int ignore_index, const float* lse,
                  const float* dloss, int64_t count, cudaStream_t stream) {
  check_tile("ce_tile_grad", logits, rows, cols, targets);
  KERNELS_CHECK((d_hi == nullptr) == (d_lo == nullptr), "ce_tile_grad: give both hi and lo, or neither");
  KERNELS_CHECK(count > 0 && count <= (int64_t(1) << 24), "ce_tile_grad: counted rows ", count,
                " outside [1, 2^24] (exact in fp32)");
  KERNELS_CHECK(rows == 0 || (lse && dloss), "ce_tile_grad: null lse or dloss");
  if (rows == 0) return;
  ptx::launch(ce_tile_grad_kernel, static_cast<unsigned>(rows), kThreads, 0, stream, logits, d_hi,
              d_lo, cols, col_offset, targets, ignore_index, lse, dloss, static_cast<float>(count));
  CUDA_CHECK_LAUNCH("ce_tile_grad");
}

void ce_mean_loss(void* out, ElemType out_type, const float* row_loss, int64_t n, int64_t count,
                  cudaStream_t stream) {
  KERNELS_CHECK(out_type == ElemType::F32 || out_type == ElemType::BF16, "ce_mean_loss: output type ",
                elem_type_name(out_type), " is not supported (f32, bf16)");
  KERNELS_CHECK(out != nullptr && n >= 0 && (n == 0 || row_loss != nullptr),
                "ce_mean_loss: null pointer or negative length");
  ptx::launch(ce_mean_loss_kernel, 1, kThreads, 0, stream, out, out_type == ElemType::BF16,
              row_loss, n, count);
  CUDA_CHECK_LAUNCH("ce_mean_loss");
}

}  // namespace kernels
