// Device helpers shared by the NF4 kernel files (kernels/nf4.cu: quantize and
// dequantize; kernels/nf4_matmul.cu: the few-token matmul): launch geometry, bf16
// bit conversions, the code table and map in shared memory, and the block scale.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/check.h"
#include "kernels/launch_utils.cuh"
#include "kernels/math/bf16.h"
#include "kernels/math/nf4.h"
#include "kernels/nf4.h"
#include "kernels/nf4_layout.h"

namespace kernels::nf4_detail {


using nf4::kChunk;
using nf4::kDequantThreads;
using nf4::kDequantTileBytes;
using nf4::kDequantTileValues;
using nf4::kGenericWarps;
using nf4::kMatmulThreads;
using nf4::kMatmulWarps;
using nf4::kMmaM;
using nf4::kMmaN;
using nf4::kXsRowStride;

inline constexpr unsigned kFullMask = 0xffffffffu;
inline constexpr int kQuantThreads = 256;
inline constexpr int kQuantWarps = kQuantThreads / 32;
inline constexpr int kOffsetThreads = 1024;
inline constexpr int kOffsetTile = 4096;  // values per sequential step (16 KiB of shared memory)
inline constexpr int kNestedThreads = kmath::kNestedBlock;
inline constexpr int kReduceThreads = 256;
inline constexpr int kCtasPerSm = 8;  // 8 x 256 threads = 2048, full occupancy

static_assert(kQuantThreads % 32 == 0 && kNestedThreads == 256, "block shapes");
static_assert(kmath::kNf4Block == 64 && 2 * 32 == kmath::kNf4Block,
              "quantize_kernel gives each of 32 lanes two values of a 64-block");
static_assert(kDequantTileBytes == 16 * 32, "dequantize tile: one 16-byte load per lane");
static_assert(kChunk == 4 * 32 && kChunk / 2 == 4 * 16,
              "a W chunk row is four lanes' 16-byte loads, each 32 values");
static_assert(kChunk % kmath::kNf4Block == 0 && 32 * 2 == kmath::kNf4Block,
              "the 32 values of a lane lie in one NF4 block");



using detail::sm_count;

// Enough CTAs for `ctas` units of work, at most kCtasPerSm per SM; at least 1.
inline unsigned capped_grid(int64_t ctas) {
  const int64_t cap = static_cast<int64_t>(sm_count()) * kCtasPerSm;
  if (ctas > cap) ctas = cap;
  return static_cast<unsigned>(ctas < 1 ? 1 : ctas);
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

__device__ __forceinline__ float bf16_bits_to_float(uint16_t v) {
  return __uint_as_float(static_cast<uint32_t>(v) << 16);
}
__device__ __forceinline__ uint16_t float_to_bf16_rn(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

template <class T>
__device__ __forceinline__ float load_value(const T* x, int64_t i);
template <>
__device__ __forceinline__ float load_value<float>(const float* x, int64_t i) {
  return x[i];
}
template <>
__device__ __forceinline__ float load_value<uint16_t>(const uint16_t* x, int64_t i) {
  return bf16_bits_to_float(x[i]);
}

// The NF4 code table, and the dynamic map when the scales are double-quantized, in shared
// memory. The caller synchronises before use.
__device__ __forceinline__ void load_tables(float* lut, float* map, bool with_map) {
  for (int i = threadIdx.x; i < kmath::kNf4Codes; i += blockDim.x) lut[i] = kmath::nf4_code(i);
  if (with_map)
    for (int i = threadIdx.x; i < kmath::kDynamicMapSize; i += blockDim.x)
      map[i] = kmath::dynamic_map_value(i);
}

// absmax' of NF4 block b: decoded from the double quantization, or the plain fp32 absmax.
__device__ __forceinline__ float block_scale(const Nf4Scales& s, const float* map, int64_t b) {
  if (s.absmax_q != nullptr)
    return kmath::nested_dequantize(map[__ldg(s.absmax_q + b)],
                                    __ldg(s.nested + b / kmath::kNestedBlock), s.offset);
  return __ldg(s.absmax + b);
}


inline void check_scales(const char* name, const Nf4Scales& s) {
  if (s.absmax_q != nullptr)
    KERNELS_CHECK(s.nested != nullptr, name, ": double-quantized scales without nested absmax");
  else
    KERNELS_CHECK(s.absmax != nullptr, name, ": no scales (absmax_q and absmax are both null)");
}

}  // namespace kernels::nf4_detail
