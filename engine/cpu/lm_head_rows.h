// What the CPU references of the fused lm_head ops share (lm_head_cross_entropy,
// lm_head_logprobs, lm_head_eval): the input checks, the chunked logits
// z = h W^T (each a double dot product rounded to float, only a [chunk, V] block at a
// time), and the backward of an op whose logit gradient is
//   dlogits_n = c_n (softmax(z_n) - onehot(t_n))   (kmath::ce_dlogit; 0 on ignored rows)
//   dh_n = dlogits_n W (one double dot product over V),  dW = sum_n dlogits_n^T h_n
// (one double accumulator per element, rows in order, rounded once at the end).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/tensor.h"

namespace engine::cpu {

struct LmHeadDims {
  int64_t n, h, v;
};

// h [N, H] and W [V, H] f32, targets [N] i32, every counted target inside [0, V): one-line
// errors naming `op` (and the row) otherwise.
LmHeadDims lm_head_dims(const char* op, const Tensor& h, const Tensor& w, const Tensor& targets, int ignore);

// Rows per chunk: `chunk_rows`, or N / 32 when 0; at least 1.
int64_t lm_head_chunk_rows(int64_t chunk_rows, int64_t n);

// Each chunk of rows holding a counted target, in order: its logits z [rows, V] computed,
// then `visit(r0, rows, z)` (z is scratch: visit may overwrite it).
void for_each_logit_chunk(const LmHeadDims& d, const Tensor& h, const Tensor& w, const Tensor& targets,
                          int ignore, int64_t chunk_rows,
                          const std::function<void(int64_t r0, int64_t rows, float* z)>& visit);

// {dh, dW, undefined} (undefined where not wanted) with the coefficient c_n = coef(n) of
// each counted row n and the saved lse [N].
std::vector<Tensor> lm_head_backward(const LmHeadDims& d, const Tensor& h, const Tensor& w, const Tensor& targets,
                                     const Tensor& lse, int ignore, int64_t chunk_rows, bool want_dh, bool want_dw,
                                     const std::function<double(int64_t n)>& coef);

}  // namespace engine::cpu
