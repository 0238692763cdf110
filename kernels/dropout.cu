// Inverted dropout with a counter-based mask.
//
// What it computes (n elements, contiguous):
//   out[i] = keep_i ? x[i] * scale : 0,   keep_i = u_i >= p,
//   u_i = word i mod 4 of Philox4x32-10(seed, counter offset + i / 4), top 24 bits.
// The math is kmath::dropout_apply / dropout_apply4 (kernels/math/activations.h); the
// CPU reference (engine/cpu/dropout.cpp) calls the same definition, so the mask is
// bit-identical on CPU and GPU. The mask is a pure function of (seed, offset, i), so
// forward and backward (and a recompute) regenerate it instead of storing it.
//   scale = 1/(1-p)  the dropout op (forward on x, backward on the incoming gradient);
//   scale = 1        the bare mask (engine/cuda/lora_linear.cpp folds 1/(1-p) into the
//                    alpha of the GEMM that consumes the masked tensor).
//
// Storage f32 or bf16, math fp32: load, widen, multiply once, round once on store.
// bf16 stores use kmath::float_to_bf16_bits, bit-identical to the CPU's rounding.
//
// Layout and grid: each thread handles 16-byte packs (4 f32 or 8 bf16) in a
// grid-stride loop, then the scalar tail; unaligned pointers take the all-scalar
// path. The grid is capped at 16 blocks of 256 threads per SM.
//
// Cost: one Philox block (10 rounds of two 32x32->64-bit multiplies, about 80 integer
// instructions) per four elements, about 20 per element, which the 4-8 bytes of
// traffic per element can hide; the tail takes one block per element.
#include <cstdint>

#include "kernels/check.h"
#include "kernels/dropout.h"
#include "kernels/launch_utils.cuh"
#include "kernels/math/activations.h"
#include "kernels/math/bf16.h"

namespace kernels {

namespace {

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 16;

template <class S>
union Pack16 {
  static constexpr int V = 16 / static_cast<int>(sizeof(S));
  uint4 raw;
  S e[V];
};

unsigned grid_for(int64_t work) { return detail::capped_grid(work, kThreads, kBlocksPerSm); }

template <class Ty>
__global__ void __launch_bounds__(kThreads)
    dropout_kernel(typename Ty::S* out, const typename Ty::S* x, float p, float scale,
                   uint64_t seed, uint64_t offset, int64_t n, int64_t n_packs) {
  using S = typename Ty::S;
  using P = Pack16<S>;
  constexpr int V = P::V;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t c = tid; c < n_packs; c += stride) {
    P v;
    v.raw = reinterpret_cast<const uint4*>(x)[c];
#pragma unroll
    for (int g = 0; g < V / 4; ++g) {  // pack c holds the groups of four c V/4 .. + V/4 - 1
      float f[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) f[j] = Ty::load(v.e[4 * g + j]);
      kmath::dropout_apply4(f, seed, offset, static_cast<uint64_t>(c * (V / 4) + g), p, scale);
#pragma unroll
      for (int j = 0; j < 4; ++j) v.e[4 * g + j] = Ty::store(f[j]);
    }
    reinterpret_cast<uint4*>(out)[c] = v.raw;
  }
  for (int64_t i = n_packs * V + tid; i < n; i += stride)
    out[i] = Ty::store(
        kmath::dropout_apply(Ty::load(x[i]), seed, offset, static_cast<uint64_t>(i), p, scale));
}

template <class Ty>
void launch(void* out, const void* x, float p, float scale, uint64_t seed, uint64_t offset,
            int64_t n, cudaStream_t stream) {
  using S = typename Ty::S;
  constexpr int V = Pack16<S>::V;
  const bool packed = reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const int64_t n_packs = packed ? n / V : 0;
  const int64_t tail = n - n_packs * V;
  ptx::launch(dropout_kernel<Ty>, grid_for(n_packs > tail ? n_packs : tail), kThreads, 0, stream,
              static_cast<S*>(out), static_cast<const S*>(x), p, scale, seed, offset, n, n_packs);
  CUDA_CHECK_LAUNCH("dropout");
}

}  // namespace

void dropout(void* out, const void* x, ElemType type, float p, float scale, uint64_t seed,
             uint64_t offset, int64_t n, cudaStream_t stream) {
  KERNELS_CHECK(n >= 0, "dropout: negative element count ", n);
  KERNELS_CHECK(p >= 0.0f && p < 1.0f, "dropout: p must be in [0, 1), got ", p);  // NaN fails
  if (n == 0) return;
  KERNELS_CHECK(out != nullptr && x != nullptr, "dropout: null pointer");
  switch (type) {
    case ElemType::F32: launch<detail::F32T>(out, x, p, scale, seed, offset, n, stream); return;
    case ElemType::BF16: launch<detail::BF16ExactT>(out, x, p, scale, seed, offset, n, stream); return;
    default: break;
  }
  KERNELS_CHECK(false, "dropout: element type ", elem_type_name(type),
                " is not supported (f32, bf16)");
}

}  // namespace kernels
