// Launcher for the dropout kernel (kernels/dropout.cu). Host-includable: raw device
// pointers, an element count n, and the stream to queue on. Throws kernels::Error on a
// bad argument or a failed launch; n == 0 queues nothing.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/elementwise.h"  // ElemType

namespace kernels {

// out[i] = keep_i ? x[i] * scale : 0, with keep_i = kmath::dropout_keep(seed, offset, i, p),
// a Philox draw, four elements per block (kernels/math/activations.h). `type` is f32
// or bf16 for both out and x (fp32 math, one rounding on store). Needs 0 <= p < 1.
//   scale = kmath::dropout_scale(p) = 1/(1-p): inverted dropout, the dropout op itself
//           (forward on x, backward on dy: the same map with the same stream).
//   scale = 1: the mask alone, for callers that fold 1/(1-p) into a GEMM's alpha.
// out may alias x exactly (in-place), not partially.
void dropout(void* out, const void* x, ElemType type, float p, float scale, uint64_t seed,
             uint64_t offset, int64_t n, cudaStream_t stream);

}  // namespace kernels
