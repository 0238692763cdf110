// The walk over lm_head's logits that the fused lm_head ops share (lm_head_cross_entropy,
// lm_head_logprobs, lm_head_eval): the [N, V] logits z = h W^T never exist, they are
// visited in tiles of `rows` tokens by `vocab_block` vocabulary entries
// (kernels::plan_lm_head_tiling), row chunks outer, vocab blocks inner, each tile one
// cuBLASLt GEMM into an fp32 buffer. The ops differ only in what a tile's kernel does with
// it (statistics, argmax, the gradient D) and in how rows reduce.
//
// Backward, for an op whose gradient is dz = D (a kernel writes D of one tile):
//   dh_chunk (+)= D_tile @ W_block   fp32, summed over vocab blocks
//   dW_block  += D_tile^T @ h_chunk  fp32, summed over row chunks
// With bf16 h and W, D is split into bf16 hi + lo parts so that the bf16 GEMM operands carry
// it to 2^-16, both products go into fp32 accumulators, rounded once. Every sum runs in a
// fixed order with beta = 1 GEMMs: no atomics, deterministic.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/tensor.h"
#include "kernels/cross_entropy_tiling.h"

namespace engine::cuda_ops {

struct LmHeadProblem {
  int64_t n, h, v;
  DType type;  // of h and W (f32 or bf16)
  bool want_dh, want_dw;
  kernels::LmHeadTiling tile;
  // bf16 gradients: D travels as bf16 hi + lo.
  bool split() const { return type == DType::BF16 && (want_dh || want_dw); }
};

// h [N, H] and W [V, H] both f32 or both bf16, targets [N] i32, all on a CUDA device
// (one-line errors naming `op`), and the tiling: the same plan in forward and backward, so
// the recomputed logits are the same GEMMs.
LmHeadProblem make_lm_head_problem(const char* op, const Tensor& h, const Tensor& w, const Tensor& targets,
                                   bool want_dh, bool want_dw, int64_t chunk_rows);

// The targets as host integers, each counted one inside [0, V) (one-line error naming `op`
// and the row otherwise). Copying `host_targets` from the device synchronises the stream.
std::vector<int32_t> checked_targets(const char* op, const Tensor& host_targets, int64_t v, int ignore);

// Element `i` of a tensor's storage, as a typed or untyped device pointer.
template <class T = char>
T* element(const Tensor& t, int64_t i) {
  return reinterpret_cast<T*>(static_cast<char*>(t.raw_data()) +
                              i * static_cast<int64_t>(dtype_bits(t.dtype()) / 8));
}

// Does rows [r0, r0 + rows) hold a counted target? Chunks without one are skipped.
bool chunk_counted(const std::vector<int32_t>& targets, int64_t r0, int64_t rows, int ignore);

// A tile's logits, fp32 [rows, cols]: rows r0.. of h times vocabulary entries v0.. of W.
struct LogitTile {
  float* z;
  int64_t r0, rows, v0, cols;
  bool first, last;  // the row chunk's first and last vocab block
};

// Every tile of the row chunks with a counted target, in order: the logits computed into
// one scratch buffer, then `visit`.
void for_each_logit_tile(const LmHeadProblem& p, const Tensor& h, const Tensor& w,
                         const std::vector<int32_t>& targets, int ignore,
                         const std::function<void(const LogitTile&)>& visit);

// dh and dW (undefined where not wanted) of an op whose logit gradient `tile_grad` writes
// per tile: into the tile's z in place (f32), or as its bf16 hi and lo parts (split()).
// `tile_grad` gets the upstream gradient `g` as fp32 (converted after dh and dW are
// allocated: the order the memory plan counts).
using TileGrad = std::function<void(const LogitTile&, uint16_t* hi, uint16_t* lo, const float* g)>;
std::vector<Tensor> lm_head_tiled_backward(const LmHeadProblem& p, const Tensor& h, const Tensor& w,
                                           const std::vector<int32_t>& targets, int ignore, const Tensor& g,
                                           const TileGrad& tile_grad);

// dh and dW when no gradient reaches the op: zeros (undefined where not wanted).
std::vector<Tensor> lm_head_zero_grads(const LmHeadProblem& p, const Tensor& h, const Tensor& w);

}  // namespace engine::cuda_ops
