// Device-side helpers shared by the memory-bound kernels (elementwise, dropout, rmsnorm,
// rope, embedding, adamw): storage types, 16-byte vectors, a fixed-order block sum, and the NVTX range
// every launcher opens. Included by .cu files only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>

#include "kernels/check.h"
#include "kernels/math/bf16.h"
#include "kernels/nvtx.h"
#include "kernels/ptx.cuh"

namespace kernels::detail {

// ---- storage: how an element is widened to float and rounded back ----------------

struct F32T {
  using S = float;
  __device__ static float load(S v) { return v; }
  __device__ static S store(float f) { return f; }
};
struct BF16T {  // hardware round-to-nearest-even, equal to kmath::float_to_bf16_bits off NaN
  using S = uint16_t;
  __device__ static float load(S v) { return __uint_as_float(static_cast<uint32_t>(v) << 16); }
  __device__ static S store(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
};
struct BF16ExactT : BF16T {  // the CPU's rounding, bit for bit (NaN payloads too)
  __device__ static S store(float f) { return kmath::float_to_bf16_bits(f); }
};

// V elements moved with one access (16 bytes for V = 16 / sizeof(S)).
template <class S, int V>
struct alignas(sizeof(S) * V) Vec {
  S e[V];
};

inline bool aligned(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

inline unsigned round_up_warp(int64_t threads) {
  int64_t t = (threads + 31) / 32 * 32;
  return static_cast<unsigned>(t < 32 ? 32 : t);
}

inline int sm_count() {
  int device = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

// The current device's opt-in limit of shared memory per block (what a kernel may be
// allowed with cudaFuncSetAttribute): 163 KiB on sm_80, 99 KiB on sm_86 and sm_89,
// 227 KiB on sm_90. Queried once per device; launchers size their tiles by it.
inline int max_shared_per_block() {
  constexpr int kDevices = 64;
  static std::atomic<int> known[kDevices] = {};  // 0: not queried yet
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const bool cached = device >= 0 && device < kDevices;
  int bytes = cached ? known[device].load(std::memory_order_relaxed) : 0;
  if (bytes == 0) {
    CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    if (cached) known[device].store(bytes, std::memory_order_relaxed);
  }
  return bytes;
}

// Blocks for `work` items of `threads` each: enough to cover it, at most
// `blocks_per_sm` per SM (grid-stride loops take the rest); at least 1.
inline unsigned capped_grid(int64_t work, int threads, int blocks_per_sm) {
  int64_t blocks = (work + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(sm_count()) * blocks_per_sm;
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

// ---- multi-tensor launches (adamw, sum_squares) -----------------------------------

// The descriptor owning chunk c: the last of descs[0 .. num) whose first_chunk <= c
// (descs sorted by first_chunk; a binary search over a table that stays in L1).
template <class Desc>
__device__ __forceinline__ int chunk_owner(const Desc* descs, int num, int64_t c) {
  int lo = 0, hi = num - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (descs[mid].first_chunk <= c) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// ---- reductions ------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the block of one value per thread, returned to every thread. The tree is
// fixed by blockDim (warp butterflies, then warp 0 over the warp sums, lane 0's
// result broadcast), so the result is deterministic for a given launch shape.
// blockDim.x must be a multiple of 32; smem holds 33 floats. Call from all threads.
__device__ __forceinline__ float block_sum(float v, float* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // smem may still be read by a previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < warps ? smem[lane] : 0.0f;
    w = warp_sum(w);
    if (lane == 0) smem[32] = w;
  }
  __syncthreads();
  return smem[32];
}

// Sum over a block of kThreads threads (a power of two) of one double per thread, in a
// fixed halving tree; returned to every thread. smem holds kThreads doubles. Call from
// all threads.
template <unsigned kThreads>
__device__ __forceinline__ double block_sum_double(double v, double* smem) {
  smem[threadIdx.x] = v;
  __syncthreads();
  for (unsigned stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) smem[threadIdx.x] += smem[threadIdx.x + stride];
    __syncthreads();
  }
  const double total = smem[0];
  __syncthreads();  // smem may be reused by the next call
  return total;
}

// ---- NVTX --------------------------------------------------------------------------

// The range every launcher opens, named after its op, in the engine's one domain.
using LaunchRange = ::kernels::nvtx::Range;

}  // namespace kernels::detail
