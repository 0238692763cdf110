// Sequence log-probability kernels for the fused per-sequence log-probs of DPO
// (engine/cuda/lm_head_logprobs.cpp; the CPU reference is engine/cpu/lm_head_logprobs.cpp).
//
// Math (kmath, kernels/math/cross_entropy.h):
//   sums   out_g = -sum_{n in g, counted} row_loss_n   (row_loss = lse - z_t = -log p(t_n)),
//          divided by the counted rows C_g when mean (IPO), 0 when C_g = 0
//   grad   d_{n,v} = -c_n (exp(z_{n,v} - lse_n) - [v == t_n]),  c_n = dout_g (/ C_g)
//
// Layout and grid:
//   sums   one block of 256 threads per sequence; thread i sums rows i, i + 256, ... in
//          double, then detail::block_sum_double's fixed tree: deterministic.
//   grad   one block of 256 threads per row; thread i handles columns i, i + 256, ...
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/check.h"
#include "kernels/launch_utils.cuh"
#include "kernels/logprobs.h"
#include "kernels/math/cross_entropy.h"

namespace kernels {

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    logprob_segment_sums_kernel(float* out, float* counts, const float* __restrict__ row_loss,
                                const int32_t* __restrict__ targets, int ignore_index,
                                int64_t segment_rows, bool mean) {
  KERNELS_SHARED(double[kThreads], partial);
  const int64_t first = int64_t(blockIdx.x) * segment_rows;
  double sum = 0, count = 0;
  for (int64_t i = threadIdx.x; i < segment_rows; i += kThreads)
    if (kmath::ce_counted(targets[first + i], ignore_index)) {
      sum += row_loss[first + i];
      count += 1;
    }
  sum = detail::block_sum_double<kThreads>(sum, partial);
  count = detail::block_sum_double<kThreads>(count, partial);
  if (threadIdx.x != 0) return;
  out[blockIdx.x] = static_cast<float>(!mean ? -sum : count > 0 ? -sum / count : 0.0);
  counts[blockIdx.x] = static_cast<float>(count);
}

__global__ void __launch_bounds__(kThreads)
    logprob_tile_grad_kernel(float* logits, uint16_t* d_hi, uint16_t* d_lo, int64_t cols,
                             int64_t col_offset, int64_t row0, const int32_t* __restrict__ targets,
                             int ignore_index, const float* __restrict__ lse,
                             const float* __restrict__ dout, const float* __restrict__ counts,
                             int64_t segment_rows, bool mean) {
  const int64_t row = blockIdx.x;
  const int32_t target = targets[row];
  const bool counted = kmath::ce_counted(target, ignore_index);
  const int64_t g = (row0 + row) / segment_rows;
  // counts[g] >= 1 on a counted row.
  const float coef = counted ? -(mean ? dout[g] / counts[g] : dout[g]) : 0.0f;
  const float l = counted ? lse[row] : 0.0f;
  const int64_t local_target = counted ? int64_t(target) - col_offset : -1;
  float* z = logits + row * cols;
  for (int64_t j = threadIdx.x; j < cols; j += kThreads) {
    const float d = counted ? kmath::ce_dlogit(z[j], l, coef, j == local_target) : 0.0f;
    if (d_hi == nullptr) z[j] = d;
    else kmath::ce_split_bf16(d, d_hi + row * cols + j, d_lo + row * cols + j);
  }
}

}  // namespace

void logprob_segment_sums(float* out, float* counts, const float* row_loss, const int32_t* targets,
                          int ignore_index, int64_t segments, int64_t segment_rows, bool mean,
                          cudaStream_t stream) {
  KERNELS_CHECK(segments >= 0 && segments <= 0x7fffffff && segment_rows > 0,
                "logprob_segment_sums: bad shape ", segments, " x ", segment_rows);
  KERNELS_CHECK(segments == 0 || (out && counts && row_loss && targets),
                "logprob_segment_sums: null pointer");
  if (segments == 0) return;
  ptx::launch(logprob_segment_sums_kernel, static_cast<unsigned>(segments), kThreads, 0, stream, out,
              counts, row_loss, targets, ignore_index, segment_rows, mean);
  CUDA_CHECK_LAUNCH("logprob_segment_sums");
}

void logprob_tile_grad(float* logits, uint16_t* d_hi, uint16_t* d_lo, int64_t rows, int64_t cols,
                       int64_t col_offset, int64_t row0, const int32_t* targets, int ignore_index,
                       const float* lse, const float* dout, const float* counts,
                       int64_t segment_rows, bool mean, cudaStream_t stream) {
  KERNELS_CHECK(rows >= 0 && rows <= 0x7fffffff && cols > 0 && segment_rows > 0 && row0 >= 0,
                "logprob_tile_grad: bad tile ", rows, " x ", cols);
  KERNELS_CHECK((d_hi == nullptr) == (d_lo == nullptr),
                "logprob_tile_grad: give both hi and lo, or neither");
  KERNELS_CHECK(rows == 0 || (logits && targets && lse && dout && counts),
                "logprob_tile_grad: null pointer");
  if (rows == 0) return;
  ptx::launch(logprob_tile_grad_kernel, static_cast<unsigned>(rows), kThreads, 0, stream, logits,
              d_hi, d_lo, cols, col_offset, row0, targets, ignore_index, lse, dout, counts,
              segment_rows, mean);
  CUDA_CHECK_LAUNCH("logprob_tile_grad");
}

}  // namespace kernels
