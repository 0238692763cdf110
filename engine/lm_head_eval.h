// Evaluation statistics of the lm_head without its logits: per row the cross-entropy
// and the greedy prediction, for held-out loss and accuracy (tools/train/evaluate.cpp).
//
//   h [N, H] (the final-normed hidden states), W [V, H] (the lm_head), targets i32 [N]
//   z_n = h_n W^T                          logits of row n, [V]; never materialised
//   loss_n   = lse(z_n) - z_n[t_n]         f32; 0 on ignored rows (t_n == ignore_index)
//   argmax_n = first v with z_nv maximal   i32 (NaN ranks highest, as torch.argmax);
//                                          -1 on ignored rows
// Not differentiable (evaluation runs under NoGradGuard) and not a registry op: one
// function, dispatched by the inputs' device. Rows go in chunks and, on CUDA, vocab
// blocks, exactly as lm_head_cross_entropy walks them (kernels/cross_entropy_tiling.h),
// so the scratch is a [rows, vocab_block] tile. Results are on h's device.
//   CPU   f32 inputs (engine/cpu/lm_head_eval.cpp): each logit a double dot product
//         rounded to float, lse in double, as the lm_head_cross_entropy reference.
//   CUDA  f32 or bf16 h and W (engine/cuda/lm_head_eval.cpp): fp32 logits from cuBLASLt,
//         fp32 running statistics (kernels::ce_tile_stats_argmax).
// The argmax rule is kmath::ce_argmax_merge (kernels/math/cross_entropy.h), on both.
#pragma once
#include "engine/tensor.h"

namespace engine {

struct LmHeadEval {
  Tensor loss;    // f32 [N]
  Tensor argmax;  // i32 [N]
};

// chunk_rows: rows per chunk (0: chosen as lm_head_cross_entropy chooses them).
LmHeadEval lm_head_eval(const Tensor& h, const Tensor& weight, const Tensor& targets,
                        int ignore_index = -100, int64_t chunk_rows = 0);

namespace cpu {
LmHeadEval lm_head_eval(const Tensor& h, const Tensor& weight, const Tensor& targets,
                        int ignore_index, int64_t chunk_rows);
}  // namespace cpu

}  // namespace engine
