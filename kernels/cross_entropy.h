// Launchers of the cross-entropy kernels (kernels/cross_entropy.cu) behind the fused
// lm_head cross-entropy (engine/cuda/lm_head_loss.cpp). Host-includable: raw device
// pointers and the stream to queue on; every launcher checks its arguments and the
// launch, throwing kernels::Error. The math is kmath's (kernels/math/cross_entropy.h).
//
// The caller walks the logits [N, V] in tiles: a tile is `rows` rows (pointers below
// are already offset to the tile's first row) by `cols` vocabulary entries starting at
// entry `col_offset`, held densely as fp32 [rows, cols] (row stride cols).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/elementwise.h"

namespace kernels {

// Folds one tile into each row's running softmax statistics (run_max, run_sum: the
// state (m, s) of kmath::CeStats) and picks the target logit when the row's target lies
// in [col_offset, col_offset + cols). The first vocab block (first_block) starts the
// state; the last one (last_block) writes lse = m + log s and row_loss = lse - z_t.
// Ignored rows (target == ignore_index) are skipped; their lse and row_loss get 0.
void ce_tile_stats(const float* logits, int64_t rows, int64_t cols, int64_t col_offset,
                   bool first_block, bool last_block, const int32_t* targets, int ignore_index,
                   float* run_max, float* run_sum, float* target_logit, float* lse,
                   float* row_loss, cudaStream_t stream);

// ce_tile_stats plus each row's running argmax (evaluation, engine/cuda/lm_head_eval.cpp):
// (arg_value, arg_index) is the state of kmath::CeArgmax over the blocks seen, the first
// block starting it; after the last block arg_index holds the first index of the row's
// maximum (-1 on ignored rows). col_offset + cols <= 2^31 - 1.
void ce_tile_stats_argmax(const float* logits, int64_t rows, int64_t cols, int64_t col_offset,
                          bool first_block, bool last_block, const int32_t* targets,
                          int ignore_index, float* run_max, float* run_sum, float* target_logit,
                          float* lse, float* row_loss, float* arg_value, int32_t* arg_index,
                          cudaStream_t stream);

// The tile's logits gradient d = (dloss[0] / count) (exp(z - lse) - onehot(target)),
// 0 on ignored rows. With d_hi == nullptr it overwrites `logits` in place (fp32);
// otherwise it writes the bf16 split d ~= hi + lo (kmath::ce_split_bf16) as two dense
// [rows, cols] matrices and leaves `logits` unchanged. count > 0.
void ce_tile_grad(float* logits, uint16_t* d_hi, uint16_t* d_lo, int64_t rows, int64_t cols,
                  int64_t col_offset, const int32_t* targets, int ignore_index, const float* lse,
                  const float* dloss, int64_t count, cudaStream_t stream);

// out[0] = (sum of row_loss[0..n) in a fixed order, in double) / count, or 0 when
// count == 0, stored as f32 or bf16.
void ce_mean_loss(void* out, ElemType out_type, const float* row_loss, int64_t n, int64_t count,
                  cudaStream_t stream);

}  // namespace kernels
