// Launcher for the rotary position embedding kernel (kernels/rope.cu). Host-includable.
//
// x, y: [batch, seq, heads, head_dim] row-major, `type` f32 or bf16, head_dim even and
// at most 2 * kRopeMaxHalf. Token t of every batch sits at position position_offset + t,
// or, given positions (device i32 [B, T]; packed sequences), position_offset + positions[b, t].
// y may equal x (in place); partial overlap is not allowed.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/elementwise.h"  // ElemType
#include "kernels/math/rope.h"

namespace kernels {

constexpr int kRopeMaxHalf = 256;  // head_dim <= 512

// Rotate-half RoPE by +angle (forward, inverse = false) or -angle (inverse = true:
// the inverse rotation, which is also the backward pass).
// inv_freq: host array of head_dim / 2 values, kmath::rope_inv_freq(i, head_dim, params)
// (rope_inv_freq_table below). The caller computes it in a C++ translation unit, where
// the build forbids FMA contraction, so it is bit-identical to the CPU reference's.
void rope(void* y, const void* x, ElemType type, int64_t batch, int64_t seq, int64_t heads,
          int64_t head_dim, int64_t position_offset, const float* inv_freq, bool inverse,
          cudaStream_t stream, const int32_t* positions = nullptr);

// Fills inv_freq[0 .. head_dim/2) with kmath::rope_inv_freq. Call it from .cpp code.
inline void rope_inv_freq_table(float* inv_freq, int head_dim, const kmath::RopeConfig& params) {
  for (int i = 0; i < head_dim / 2; ++i) inv_freq[i] = kmath::rope_inv_freq(i, head_dim, params);
}

}  // namespace kernels
