// NF4 kernels: quantize (with double quantization), dequantize, and the direct few-token
// matmul. The format and the launchers are in kernels/nf4.h; the per-value math is kmath's
// (kernels/math/nf4.h), the index math kernels/nf4_layout.h: the CPU reference
// (engine/quant/nf4.cpp) and the CPU tests call the same functions.
//
// Bit-exactness with the CPU. Quantize and dequantize perform the CPU's float operations one
// for one: absmax = max |x| (order-free; NaN ignored by both std::max and fmaxf), 1 / absmax
// (IEEE division: nvcc's default -prec-div=true, __fdiv_rn where written here), x * inv,
// the comparisons of kmath, code * absmax' with __fmul_rn and absmax' = map[q] * nested +
// offset with __fmul_rn / __fadd_rn, so nvcc cannot contract anything into an FMA that the
// host (built with -ffp-contract=off) does not do. bf16 outputs use cvt.rn (round to nearest
// even), equal to kmath::float_to_bf16_bits except for NaN payloads. The offset is the one
// place where the CPU's order matters (a double sum in index order); see offset_kernel.
//
//
// quantize_kernel       one warp per 64-block, two values per lane: the block max by five
//                       xor-shuffles, then one packed byte per lane (32 contiguous bytes per
//                       warp). Quantization runs once per weight at load time; it is written
//                       to be obviously equal to the CPU loop rather than to be fast.
// offset_kernel         one CTA of 1024 threads: each thread sums a strided slice in double
//                       and tracks the least ulp among the non-zero values; if the total is
//                       provably exact (nf4::offset_sum_is_exact: no partial sum can round, so
//                       every order gives the same double) it is used; otherwise the CTA stages
//                       4096-value tiles in shared memory and thread 0 adds them in index order.
//                       The fast path holds while n * mean(absmax) < ~2^28 * min(absmax > 0):
//                       for a 28672 x 8192 weight (3.7 M blocks) while no non-zero absmax is
//                       below ~1/100 of the mean, which real weights satisfy; the fallback is
//                       one dependent double add per block (~10-30 ms for that weight, est.).
// nested_kernel         one CTA per 256-block of absmax: max |absmax - offset| by shuffles and
//                       shared memory, then the 8-bit dynamic-map code of each value (the map
//                       built in shared memory from kmath::dynamic_map_value).
// dequantize_kernel     memory-bound streaming. A warp takes a tile of 512 packed bytes (1024
//                       values, 16 blocks): one 16-byte load per lane, lanes 0..15 decode one
//                       block scale each (absmax' on the fly from the u8 code, the nested f32
//                       and the offset), the tile goes through 512 bytes of shared memory so
//                       that each lane then turns 4 (bf16) or 2 (f32) contiguous bytes into one
//                       16-byte store: every store instruction of the warp writes 512
//                       contiguous bytes. The code table and the map sit in shared memory (16
//                       codes in 16 banks: lookups never conflict). Per value: a shift, a
//                       table read, one multiply, half a bf16x2 convert. The grid is capped
//                       at 8 CTAs of 256 threads per SM (full occupancy) and loops; values past
//                       the last whole tile (or everything, for pointers not 16-byte aligned)
//                       take a scalar grid-stride loop.
//
// The few-token matmul is in kernels/nf4_matmul.cu.

#include "kernels/nf4_device.cuh"

namespace kernels {

using namespace nf4_detail;

namespace {

// ---- quantize -------------------------------------------------------------------------

template <class T>
__global__ void __launch_bounds__(kQuantThreads)
    quantize_kernel(const T* x, int64_t n, int64_t blocks, uint8_t* packed, float* absmax) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kQuantWarps;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * kQuantWarps + (threadIdx.x >> 5); b < blocks;
       b += warps) {
    const int64_t i0 = b * kmath::kNf4Block + 2 * lane;
    const float x0 = i0 < n ? load_value(x, i0) : 0.0f;
    const float x1 = i0 + 1 < n ? load_value(x, i0 + 1) : 0.0f;
    // Starting from 0 as the CPU does: fmaxf drops NaN, so a block of NaNs has absmax 0.
    float a = fmaxf(fmaxf(0.0f, fabsf(x0)), fabsf(x1));
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) a = fmaxf(a, __shfl_xor_sync(kFullMask, a, off));
    if (lane == 0) absmax[b] = a;
    if (i0 < n) {
      const float inv = kmath::nf4_inverse_scale(a);
      const uint8_t hi = kmath::nf4_quantize(x0, inv);
      const uint8_t lo = i0 + 1 < n ? kmath::nf4_quantize(x1, inv)
                                    : static_cast<uint8_t>(kmath::kNf4ZeroNibble);
      packed[i0 / 2] = kmath::nf4_pack(hi, lo);
    }
  }
}

// ---- double quantization --------------------------------------------------------------

__device__ __forceinline__ float mean_to_float(double sum, int64_t n) {
  return __double2float_rn(__ddiv_rn(sum, static_cast<double>(n)));
}

__global__ void __launch_bounds__(kOffsetThreads)
    offset_kernel(const float* absmax, int64_t n, float* offset, bool sequential_only) {
  KERNELS_SHARED(double[kOffsetThreads / 32], warp_sums);
  KERNELS_SHARED(int[kOffsetThreads / 32], warp_keys);
  KERNELS_SHARED(int, parallel_is_exact);
  KERNELS_SHARED(float[kOffsetTile], tile);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  if (!sequential_only) {
    double sum = 0.0;
    int key = 256;  // no non-zero value seen
    for (int64_t i = tid; i < n; i += kOffsetThreads) {
      const float a = absmax[i];
      sum = __dadd_rn(sum, static_cast<double>(a));
      if (a != 0.0f) key = min(key, nf4::ulp_exponent_key(__float_as_uint(a)));
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      sum = __dadd_rn(sum, __shfl_down_sync(kFullMask, sum, off));
      key = min(key, __shfl_down_sync(kFullMask, key, off));
    }
    if (lane == 0) {
      warp_sums[warp] = sum;
      warp_keys[warp] = key;
    }
    __syncthreads();
    if (tid == 0) {
      double total = 0.0;
      int min_key = 256;
      for (int w = 0; w < kOffsetThreads / 32; ++w) {
        total = __dadd_rn(total, warp_sums[w]);
        min_key = min(min_key, warp_keys[w]);
      }
      parallel_is_exact = nf4::offset_sum_is_exact(total, min_key) ? 1 : 0;
      if (parallel_is_exact) *offset = mean_to_float(total, n);
    }
    __syncthreads();
    if (parallel_is_exact) return;  // uniform: every thread read the same flag
  }

  // The CPU's order: one addition after another, in index order.
  double total = 0.0;  // used by thread 0 only
  for (int64_t base = 0; base < n; base += kOffsetTile) {
    const int len = static_cast<int>(n - base < kOffsetTile ? n - base : kOffsetTile);
    for (int i = tid; i < len; i += kOffsetThreads) tile[i] = absmax[base + i];
    __syncthreads();
    if (tid == 0)
      for (int i = 0; i < len; ++i) total = __dadd_rn(total, static_cast<double>(tile[i]));
    __syncthreads();
  }
  if (tid == 0) *offset = mean_to_float(total, n);
}

__global__ void __launch_bounds__(kNestedThreads)
    nested_kernel(const float* absmax, int64_t n, const float* offset, uint8_t* q,
                  float* nested) {
  KERNELS_SHARED(float[kmath::kDynamicMapSize], map);
  KERNELS_SHARED(float[kNestedThreads / 32], warp_max);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  map[tid] = kmath::dynamic_map_value(tid);
  const float off = *offset;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kNestedThreads + tid;
  const float v = i < n ? __fsub_rn(absmax[i], off) : 0.0f;
  float c = fmaxf(0.0f, fabsf(v));  // NaN dropped, as std::max(c, NaN) keeps c
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) c = fmaxf(c, __shfl_xor_sync(kFullMask, c, o));
  if (lane == 0) warp_max[warp] = c;
  __syncthreads();  // also publishes the map
  c = warp_max[0];
#pragma unroll
  for (int w = 1; w < kNestedThreads / 32; ++w) c = fmaxf(c, warp_max[w]);
  if (tid == 0) nested[blockIdx.x] = c;
  // No guard, as the CPU (and bnb's CUDA kernel): c == 0 gives 0 * inf = NaN -> code 0.
  const float inv = __fdiv_rn(1.0f, c);
  if (i < n) q[i] = kmath::dynamic_map_quantize(__fmul_rn(v, inv), static_cast<const float*>(map));
}

// ---- dequantize -----------------------------------------------------------------------

template <bool kBf16>
__global__ void __launch_bounds__(kDequantThreads)
    dequantize_kernel(void* out, const uint8_t* packed, Nf4Scales s, int64_t n, int64_t tiles) {
  constexpr int kWarps = kDequantThreads / 32;
  constexpr int kValuesPerStore = kBf16 ? 8 : 4;  // one 16-byte store
  constexpr int kStores = kDequantTileValues / kValuesPerStore / 32;
  KERNELS_SHARED(float[kmath::kNf4Codes], lut);
  KERNELS_SHARED(float[kmath::kDynamicMapSize], map);
  KERNELS_SHARED(uint32_t[kWarps][kDequantTileBytes / 4], stage);
  load_tables(lut, map, s.absmax_q != nullptr);
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;

  for (int64_t tile = static_cast<int64_t>(blockIdx.x) * kWarps + warp; tile < tiles;
       tile += warps) {
    // Read once: evict-first, so the L2 keeps what the next kernels reuse.
    const uint4 v = __ldcs(reinterpret_cast<const uint4*>(packed + tile * kDequantTileBytes) + lane);
    // Lane j < 16 decodes the scale of the tile's block j (lanes 16..31 repeat 0..15).
    const int64_t first_block = tile * (kDequantTileValues / kmath::kNf4Block);
    const float my_scale = block_scale(s, map, first_block + (lane & 15));
    reinterpret_cast<uint4*>(stage[warp])[lane] = v;
    __syncwarp();
#pragma unroll
    for (int j = 0; j < kStores; ++j) {
      const int c = 32 * j + lane;  // 16-byte output chunk of the tile
      const float scale = __shfl_sync(kFullMask, my_scale, nf4::dequant_scale_lane(c, kValuesPerStore));
      const int64_t first = tile * kDequantTileValues + static_cast<int64_t>(c) * kValuesPerStore;
      if constexpr (kBf16) {
        uint32_t o[4];
        nf4::decode_word_bf16(stage[warp][c], scale, lut, o);
        *reinterpret_cast<uint4*>(static_cast<uint16_t*>(out) + first) = make_uint4(o[0], o[1], o[2], o[3]);
      } else {
        const uint32_t two = reinterpret_cast<const uint16_t*>(stage[warp])[c];
        float o[4];
        nf4::decode_half_f32(two, scale, lut, o);
        *reinterpret_cast<float4*>(static_cast<float*>(out) + first) = make_float4(o[0], o[1], o[2], o[3]);
      }
    }
    __syncwarp();  // the stage is rewritten by the next tile
  }

  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = tiles * kDequantTileValues + static_cast<int64_t>(blockIdx.x) * blockDim.x +
                   threadIdx.x;
       i < n; i += stride) {
    const float v = nf4::scale_code(lut[kmath::nf4_nibble(packed, i)],
                                    block_scale(s, map, i / kmath::kNf4Block));
    if constexpr (kBf16)
      static_cast<uint16_t*>(out)[i] = float_to_bf16_rn(v);
    else
      static_cast<float*>(out)[i] = v;
  }
}

}  // namespace

// ---- launchers ------------------------------------------------------------------------

void nf4_quantize(const void* x, ElemType x_type, int64_t n, uint8_t* packed, float* absmax,
                  cudaStream_t stream) {
  KERNELS_CHECK(n >= 0, "nf4_quantize: negative element count ", n);
  if (n == 0) return;
  KERNELS_CHECK(x != nullptr && packed != nullptr && absmax != nullptr, "nf4_quantize: null pointer");
  const int64_t blocks = nf4::ceil_div(n, kmath::kNf4Block);
  const unsigned grid = capped_grid(nf4::ceil_div(blocks, kQuantWarps));
  switch (x_type) {
    case ElemType::F32:
      ptx::launch(quantize_kernel<float>, grid, kQuantThreads, 0, stream,
                  static_cast<const float*>(x), n, blocks, packed, absmax);
      break;
    case ElemType::BF16:
      ptx::launch(quantize_kernel<uint16_t>, grid, kQuantThreads, 0, stream,
                  static_cast<const uint16_t*>(x), n, blocks, packed, absmax);
      break;
    default:
      KERNELS_CHECK(false, "nf4_quantize: input type ", elem_type_name(x_type),
                    " is not supported (f32, bf16)");
  }
  CUDA_CHECK_LAUNCH("nf4_quantize");
}

void nf4_double_quantize(const float* absmax, int64_t blocks, float* offset, uint8_t* absmax_q,
                         float* nested, cudaStream_t stream, Nf4OffsetSum sum) {
  KERNELS_CHECK(blocks > 0, "nf4_double_quantize: needs at least one block, got ", blocks);
  KERNELS_CHECK(absmax != nullptr && offset != nullptr && absmax_q != nullptr && nested != nullptr,
                "nf4_double_quantize: null pointer");
  ptx::launch(offset_kernel, 1, kOffsetThreads, 0, stream, absmax, blocks, offset,
              sum == Nf4OffsetSum::Sequential);
  CUDA_CHECK_LAUNCH("nf4_double_quantize (offset)");
  const int64_t nested_blocks = nf4::ceil_div(blocks, kmath::kNestedBlock);
  KERNELS_CHECK(nested_blocks <= 0x7fffffff, "nf4_double_quantize: ", blocks, " blocks is too many");
  ptx::launch(nested_kernel, static_cast<unsigned>(nested_blocks), kNestedThreads, 0, stream,
              absmax, blocks, offset, absmax_q, nested);
  CUDA_CHECK_LAUNCH("nf4_double_quantize (nested)");
}

void nf4_dequantize(void* out, ElemType out_type, const uint8_t* packed, const Nf4Scales& scales,
                    int64_t n, cudaStream_t stream) {
  KERNELS_CHECK(n >= 0, "nf4_dequantize: negative element count ", n);
  if (n == 0) return;
  KERNELS_CHECK(out != nullptr && packed != nullptr, "nf4_dequantize: null pointer");
  check_scales("nf4_dequantize", scales);
  KERNELS_CHECK(out_type == ElemType::BF16 || out_type == ElemType::F32, "nf4_dequantize: output type ",
                elem_type_name(out_type), " is not supported (bf16, f32)");
  const int64_t tiles = aligned16(packed) && aligned16(out) ? n / kDequantTileValues : 0;
  const int64_t tail = n - tiles * kDequantTileValues;
  const int64_t warps = kDequantThreads / 32;
  const int64_t ctas_for_tiles = nf4::ceil_div(tiles, warps);
  const int64_t ctas_for_tail = nf4::ceil_div(tail, kDequantThreads);
  const unsigned grid = capped_grid(ctas_for_tiles > ctas_for_tail ? ctas_for_tiles : ctas_for_tail);
  if (out_type == ElemType::BF16)
    ptx::launch(dequantize_kernel<true>, grid, kDequantThreads, 0, stream, out, packed, scales, n,
                tiles);
  else
    ptx::launch(dequantize_kernel<false>, grid, kDequantThreads, 0, stream, out, packed, scales, n,
                tiles);
  CUDA_CHECK_LAUNCH("nf4_dequantize");
}

}  // namespace kernels
