// Launchers of the sequence log-probability kernels (kernels/logprobs.cu) behind the
// fused per-sequence log-probs of DPO (engine/cuda/lm_head_logprobs.cpp). The tiles of
// logits and their softmax statistics are the cross-entropy kernels' (kernels/
// cross_entropy.h: ce_tile_stats gives row_loss = lse - z_t = -log p(t)); these add the
// per-sequence reduction and the per-row gradient coefficient. Host-includable; every
// launcher checks its arguments and the launch, throwing kernels::Error.
//
// Rows form `segments` sequences of `segment_rows` consecutive rows.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace kernels {

// out[g] = -(sum of row_loss over the counted rows of sequence g), or that over the
// count when `mean` (0 without counted rows); counts[g] = its counted rows (as float).
// Double sums in a fixed order.
void logprob_segment_sums(float* out, float* counts, const float* row_loss, const int32_t* targets,
                          int ignore_index, int64_t segments, int64_t segment_rows, bool mean,
                          cudaStream_t stream);

// The tile's logits gradient d = -c_n (exp(z - lse) - onehot(target)) with
// c_n = dout[g] (/ counts[g] when mean), g = (row0 + n) / segment_rows; 0 on ignored rows.
// `logits`, `targets`, `lse` point at the tile's first row (row0 of the whole). As
// ce_tile_grad: fp32 in place when d_hi == nullptr, else the bf16 split hi + lo.
void logprob_tile_grad(float* logits, uint16_t* d_hi, uint16_t* d_lo, int64_t rows, int64_t cols,
                       int64_t col_offset, int64_t row0, const int32_t* targets, int ignore_index,
                       const float* lse, const float* dout, const float* counts,
                       int64_t segment_rows, bool mean, cudaStream_t stream);

}  // namespace kernels
