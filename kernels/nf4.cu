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
// matmul_mma_kernel     y = x W^T for m <= 64, K % 128 == 0. The cost of M <= 64 is reading
//                       W: 0.5 byte per weight from NF4 against 2 bytes for a bf16 GEMM, so
//                       the kernel reads W once, straight from NF4, and never writes it dense.
//                       CUDA-core FMAs would be compute-bound beyond M ~ 4 (A100: 19.5 TFLOP/s
//                       fp32), so products run on bf16 tensor cores, mma.sync.m16n8k16 with fp32
//                       accumulators. A CTA (4 warps) owns 32 NT rows of W (output columns)
//                       and one k-range (split); each warp owns NT n-tiles of 8 rows. Per chunk
//                       of 128 k: each lane loads 16 bytes of each of its NT W rows (one
//                       16-byte load; the next chunk's are prefetched into registers while the
//                       current one computes), decodes them into B fragments in registers
//                       (table lookup, scale multiply, bf16x2 convert; nf4::b_fragment), and
//                       takes A fragments of x from shared memory (nf4::a_fragment). x [m, 128]
//                       chunks are staged with cp.async into a double buffer shared by the 4
//                       warps, rows m..16*MT-1 kept zero. The mma k slots are mapped onto k so
//                       that a lane's W bytes and x values are contiguous (nf4::mma_k): the W
//                       load is one 16-byte access, the x reads four 16-byte shared loads per
//                       row, conflict-free thanks to the tile's padding (nf4::xs_offset).
//                       Split-K: chunks are divided among grid.y splits (the split count comes
//                       from the shape, nf4::matmul_plan, aiming at ~512 CTAs); with more than
//                       one split each writes fp32 partials and reduce_splits_kernel adds them
//                       in split order, so results are deterministic and device-independent.
// matmul_generic_kernel any K (tiny models, tests): one warp per output column, lanes stride
//                       over k, fp32 FMAs into up to 64 accumulators, a fixed xor-butterfly.
//                       W is rounded to bf16 first, as on the tensor-core path.
#include <cuda_bf16.h>

#include <cstdint>

#include "engine/cuda/check.h"
#include "kernels/math/bf16.h"
#include "kernels/math/nf4.h"
#include "kernels/nf4.h"
#include "kernels/nf4_layout.h"

namespace kernels {

namespace {

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

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kQuantThreads = 256;
constexpr int kQuantWarps = kQuantThreads / 32;
constexpr int kOffsetThreads = 1024;
constexpr int kOffsetTile = 4096;  // values per sequential step (16 KiB of shared memory)
constexpr int kNestedThreads = kmath::kNestedBlock;
constexpr int kReduceThreads = 256;
constexpr int kCtasPerSm = 8;  // 8 x 256 threads = 2048, full occupancy

static_assert(kQuantThreads % 32 == 0 && kNestedThreads == 256, "block shapes");
static_assert(kmath::kNf4Block == 64 && 2 * 32 == kmath::kNf4Block,
              "quantize_kernel gives each of 32 lanes two values of a 64-block");
static_assert(kDequantTileBytes == 16 * 32, "dequantize tile: one 16-byte load per lane");
static_assert(kChunk == 4 * 32 && kChunk / 2 == 4 * 16,
              "a W chunk row is four lanes' 16-byte loads, each 32 values");
static_assert(kChunk % kmath::kNf4Block == 0 && 32 * 2 == kmath::kNf4Block,
              "the 32 values of a lane lie in one NF4 block");

// ---- helpers --------------------------------------------------------------------------

int sm_count() {
  int device = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

// Enough CTAs for `ctas` units of work, at most kCtasPerSm per SM; at least 1.
unsigned capped_grid(int64_t ctas) {
  const int64_t cap = static_cast<int64_t>(sm_count()) * kCtasPerSm;
  if (ctas > cap) ctas = cap;
  return static_cast<unsigned>(ctas < 1 ? 1 : ctas);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

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
  __shared__ double warp_sums[kOffsetThreads / 32];
  __shared__ int warp_keys[kOffsetThreads / 32];
  __shared__ int parallel_is_exact;
  __shared__ float tile[kOffsetTile];
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
  __shared__ float map[kmath::kDynamicMapSize];
  __shared__ float warp_max[kNestedThreads / 32];
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
  __shared__ float lut[kmath::kNf4Codes];
  __shared__ float map[kmath::kDynamicMapSize];
  __shared__ __align__(16) uint32_t stage[kWarps][kDequantTileBytes / 4];
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

// ---- matmul_small_m: tensor cores -----------------------------------------------------

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// d += a b, one m16n8k16 bf16 tensor-core product with fp32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// One lane's share of a W chunk: 16 packed bytes per n-tile and what its block scale needs.
template <int NT>
struct WChunk {
  uint4 w[NT];
  uint32_t q[NT];   // dynamic-map code (double-quantized)
  float f[NT];      // nested absmax (double-quantized) or the absmax (plain)
};

template <int MT, int NT>
__global__ void __launch_bounds__(kMatmulThreads)
    matmul_mma_kernel(uint16_t* y, float* partial, const uint16_t* x, const uint8_t* w,
                      Nf4Scales s, int m, int64_t n, int64_t k, int64_t chunks, int splits) {
  constexpr int kRows = MT * kMmaM;
  constexpr int kXsElems = kRows * kXsRowStride;
  __shared__ float lut[kmath::kNf4Codes];
  __shared__ float map[kmath::kDynamicMapSize];
  __shared__ __align__(16) uint16_t xs[2][kXsElems];

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const bool dq = s.absmax_q != nullptr;
  load_tables(lut, map, dq);
  // Rows m..kRows-1 of x stay zero (cp.async fills rows < m only); published by the first
  // __syncthreads of the chunk loop.
  for (int i = m * kXsRowStride + tid; i < kXsElems; i += kMatmulThreads) {
    xs[0][i] = 0;
    xs[1][i] = 0;
  }

  const int split = blockIdx.y;
  const int64_t c_begin = nf4::chunk_begin(chunks, splits, split);
  const int64_t c_end = nf4::chunk_begin(chunks, splits, split + 1);
  const int64_t warp_row0 = static_cast<int64_t>(blockIdx.x) * (kMatmulWarps * kMmaN * NT) +
                            static_cast<int64_t>(warp) * kMmaN * NT;
  // This lane's W rows, one per n-tile (B column g), clamped to the last row: columns past n
  // are computed from valid memory and never stored.
  int64_t wrow[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int64_t r = warp_row0 + kMmaN * nt + g;
    wrow[nt] = r < n ? r : n - 1;
  }

  auto load_w = [&](int64_t kc, WChunk<NT>& c) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      c.w[nt] = __ldcs(reinterpret_cast<const uint4*>(w + nf4::lane_w_byte(wrow[nt], kc, t, k)));
      const int64_t b = nf4::lane_w_block(wrow[nt], kc, t, k);
      if (dq) {
        c.q[nt] = __ldg(s.absmax_q + b);
        c.f[nt] = __ldg(s.nested + b / kmath::kNestedBlock);
      } else {
        c.q[nt] = 0;
        c.f[nt] = __ldg(s.absmax + b);
      }
    }
  };
  // x[0..m), k in [kc*128, kc*128 + 128) -> xs[buf]: 16 segments of 16 bytes per row.
  auto stage_x = [&](int64_t kc, int buf) {
    for (int i = tid; i < m * 16; i += kMatmulThreads) {
      const int r = i >> 4, seg = i & 15;
      cp_async16(&xs[buf][nf4::xs_offset(r, 8 * seg)], x + r * k + kc * kChunk + 8 * seg);
    }
    cp_async_commit();
  };

  float acc[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[mt][nt][r] = 0.0f;

  WChunk<NT> cur{}, next{};
  if (c_begin < c_end) {
    stage_x(c_begin, 0);
    load_w(c_begin, cur);
  }
  for (int64_t kc = c_begin; kc < c_end; ++kc) {
    const int buf = static_cast<int>((kc - c_begin) & 1);
    if (kc + 1 < c_end) {
      // The other buffer was last read in the previous iteration, which ended in __syncthreads.
      stage_x(kc + 1, buf ^ 1);
      load_w(kc + 1, next);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    float scale[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      scale[nt] = dq ? kmath::nested_dequantize(map[cur.q[nt]], cur.f[nt], s.offset) : cur.f[nt];
    const uint16_t* xb = xs[buf];
#pragma unroll
    for (int cp = 0; cp < 4; ++cp) {
      // Rows g and g + 8 of each m-tile, k = 32 t + 8 cp .. + 7: covers steps c = 2cp, 2cp+1.
      uint32_t xlo[MT][4], xhi[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint4 lo = *reinterpret_cast<const uint4*>(xb + nf4::xs_offset(mt * kMmaM + g, 32 * t + 8 * cp));
        const uint4 hi = *reinterpret_cast<const uint4*>(xb + nf4::xs_offset(mt * kMmaM + g + 8, 32 * t + 8 * cp));
        xlo[mt][0] = lo.x, xlo[mt][1] = lo.y, xlo[mt][2] = lo.z, xlo[mt][3] = lo.w;
        xhi[mt][0] = hi.x, xhi[mt][1] = hi.y, xhi[mt][2] = hi.z, xhi[mt][3] = hi.w;
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int c = 2 * cp + h;
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) nf4::a_fragment(xlo[mt], xhi[mt], c, a[mt]);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const uint32_t words[4] = {cur.w[nt].x, cur.w[nt].y, cur.w[nt].z, cur.w[nt].w};
          uint32_t b[2];
          nf4::b_fragment(words, c, scale[nt], lut, b);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) mma_bf16(acc[mt][nt], a[mt], b);
        }
      }
    }
    __syncthreads();  // xs[buf] is restaged two iterations on
    cur = next;
  }

  // D register r of (mt, nt): row mt*16 + g + 8 (r >> 1), column 8 nt + 2 t + (r & 1).
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = nf4::d_row(mt, g, r);
        const int64_t col = warp_row0 + nf4::d_col(nt, t, r);
        if (row >= m || col >= n) continue;
        if (splits == 1)
          y[row * n + col] = float_to_bf16_rn(acc[mt][nt][r]);
        else
          partial[(static_cast<int64_t>(split) * m + row) * n + col] = acc[mt][nt][r];
      }
}

// y = bf16(partial[0] + partial[1] + ... ), in split order.
__global__ void __launch_bounds__(kReduceThreads)
    reduce_splits_kernel(uint16_t* y, const float* partial, int64_t mn, int splits) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < mn; i += stride) {
    float sum = partial[i];
    for (int sp = 1; sp < splits; ++sp) sum = __fadd_rn(sum, partial[sp * mn + i]);
    y[i] = float_to_bf16_rn(sum);
  }
}

// ---- matmul_small_m: any K ------------------------------------------------------------

template <int MT>
__global__ void __launch_bounds__(kGenericWarps * 32)
    matmul_generic_kernel(uint16_t* y, const uint16_t* x, const uint8_t* w, Nf4Scales s, int m,
                          int64_t n, int64_t k) {
  constexpr int kRows = MT * kMmaM;
  __shared__ float lut[kmath::kNf4Codes];
  __shared__ float map[kmath::kDynamicMapSize];
  load_tables(lut, map, s.absmax_q != nullptr);
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kGenericWarps + (threadIdx.x >> 5);
  if (col >= n) return;  // whole warps only: no shuffle below sees a missing lane
  float acc[kRows];
#pragma unroll
  for (int i = 0; i < kRows; ++i) acc[i] = 0.0f;
  for (int64_t kk = lane; kk < k; kk += 32) {
    const int64_t idx = col * k + kk;
    const float wv = bf16_bits_to_float(float_to_bf16_rn(
        nf4::scale_code(lut[kmath::nf4_nibble(w, idx)], block_scale(s, map, idx / kmath::kNf4Block))));
#pragma unroll
    for (int i = 0; i < kRows; ++i)
      if (i < m) acc[i] = fmaf(bf16_bits_to_float(x[i * k + kk]), wv, acc[i]);
  }
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    if (i >= m) break;
    float v = acc[i];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
    if (lane == 0) y[i * n + col] = float_to_bf16_rn(v);
  }
}

void check_scales(const char* name, const Nf4Scales& s) {
  if (s.absmax_q != nullptr)
    ENGINE_CHECK(s.nested != nullptr, name, ": double-quantized scales without nested absmax");
  else
    ENGINE_CHECK(s.absmax != nullptr, name, ": no scales (absmax_q and absmax are both null)");
}

template <int MT>
void launch_matmul(const nf4::MatmulPlan& p, uint16_t* y, float* partial, const uint16_t* x,
                   const uint8_t* w, const Nf4Scales& s, int m, int64_t n, int64_t k,
                   cudaStream_t stream) {
  if (!p.tensor_cores) {
    matmul_generic_kernel<MT><<<static_cast<unsigned>(p.n_blocks), kGenericWarps * 32, 0, stream>>>(
        y, x, w, s, m, n, k);
    CUDA_CHECK_LAUNCH("nf4_matmul_small_m (generic)");
    return;
  }
  constexpr int NT = MT <= 2 ? 4 : 2;
  ENGINE_CHECK(p.n_tiles_per_warp == NT, "nf4_matmul_small_m: plan and kernel disagree on NT");
  const dim3 grid(static_cast<unsigned>(p.n_blocks), static_cast<unsigned>(p.splits));
  matmul_mma_kernel<MT, NT><<<grid, kMatmulThreads, 0, stream>>>(y, partial, x, w, s, m, n, k,
                                                                 p.chunks, p.splits);
  CUDA_CHECK_LAUNCH("nf4_matmul_small_m (tensor cores)");
  if (p.splits > 1) {
    const int64_t mn = static_cast<int64_t>(m) * n;
    reduce_splits_kernel<<<capped_grid(nf4::ceil_div(mn, kReduceThreads)), kReduceThreads, 0, stream>>>(
        y, partial, mn, p.splits);
    CUDA_CHECK_LAUNCH("nf4_matmul_small_m (split reduction)");
  }
}

}  // namespace

// ---- launchers ------------------------------------------------------------------------

void nf4_quantize(const void* x, ElemType x_type, int64_t n, uint8_t* packed, float* absmax,
                  cudaStream_t stream) {
  ENGINE_CHECK(n >= 0, "nf4_quantize: negative element count ", n);
  if (n == 0) return;
  ENGINE_CHECK(x != nullptr && packed != nullptr && absmax != nullptr, "nf4_quantize: null pointer");
  const int64_t blocks = nf4::ceil_div(n, kmath::kNf4Block);
  const unsigned grid = capped_grid(nf4::ceil_div(blocks, kQuantWarps));
  switch (x_type) {
    case ElemType::F32:
      quantize_kernel<float><<<grid, kQuantThreads, 0, stream>>>(static_cast<const float*>(x), n,
                                                                  blocks, packed, absmax);
      break;
    case ElemType::BF16:
      quantize_kernel<uint16_t><<<grid, kQuantThreads, 0, stream>>>(
          static_cast<const uint16_t*>(x), n, blocks, packed, absmax);
      break;
    default:
      ENGINE_CHECK(false, "nf4_quantize: input type ", elem_type_name(x_type),
                   " is not supported (f32, bf16)");
  }
  CUDA_CHECK_LAUNCH("nf4_quantize");
}

void nf4_double_quantize(const float* absmax, int64_t blocks, float* offset, uint8_t* absmax_q,
                         float* nested, cudaStream_t stream, Nf4OffsetSum sum) {
  ENGINE_CHECK(blocks > 0, "nf4_double_quantize: needs at least one block, got ", blocks);
  ENGINE_CHECK(absmax != nullptr && offset != nullptr && absmax_q != nullptr && nested != nullptr,
               "nf4_double_quantize: null pointer");
  offset_kernel<<<1, kOffsetThreads, 0, stream>>>(absmax, blocks, offset,
                                                  sum == Nf4OffsetSum::Sequential);
  CUDA_CHECK_LAUNCH("nf4_double_quantize (offset)");
  const int64_t nested_blocks = nf4::ceil_div(blocks, kmath::kNestedBlock);
  ENGINE_CHECK(nested_blocks <= 0x7fffffff, "nf4_double_quantize: ", blocks, " blocks is too many");
  nested_kernel<<<static_cast<unsigned>(nested_blocks), kNestedThreads, 0, stream>>>(
      absmax, blocks, offset, absmax_q, nested);
  CUDA_CHECK_LAUNCH("nf4_double_quantize (nested)");
}

void nf4_dequantize(void* out, ElemType out_type, const uint8_t* packed, const Nf4Scales& scales,
                    int64_t n, cudaStream_t stream) {
  ENGINE_CHECK(n >= 0, "nf4_dequantize: negative element count ", n);
  if (n == 0) return;
  ENGINE_CHECK(out != nullptr && packed != nullptr, "nf4_dequantize: null pointer");
  check_scales("nf4_dequantize", scales);
  ENGINE_CHECK(out_type == ElemType::BF16 || out_type == ElemType::F32, "nf4_dequantize: output type ",
               elem_type_name(out_type), " is not supported (bf16, f32)");
  const int64_t tiles = aligned16(packed) && aligned16(out) ? n / kDequantTileValues : 0;
  const int64_t tail = n - tiles * kDequantTileValues;
  const int64_t warps = kDequantThreads / 32;
  const int64_t ctas_for_tiles = nf4::ceil_div(tiles, warps);
  const int64_t ctas_for_tail = nf4::ceil_div(tail, kDequantThreads);
  const unsigned grid = capped_grid(ctas_for_tiles > ctas_for_tail ? ctas_for_tiles : ctas_for_tail);
  if (out_type == ElemType::BF16)
    dequantize_kernel<true><<<grid, kDequantThreads, 0, stream>>>(out, packed, scales, n, tiles);
  else
    dequantize_kernel<false><<<grid, kDequantThreads, 0, stream>>>(out, packed, scales, n, tiles);
  CUDA_CHECK_LAUNCH("nf4_dequantize");
}

size_t nf4_matmul_small_m_workspace_bytes(int64_t m, int64_t n, int64_t k) {
  return nf4::matmul_plan(m, n, k, /*aligned=*/true).workspace_bytes;
}

void nf4_matmul_small_m(void* y, const void* x, const uint8_t* packed, const Nf4Scales& scales,
                        int64_t m, int64_t n, int64_t k, void* workspace, size_t workspace_bytes,
                        cudaStream_t stream) {
  ENGINE_CHECK(m >= 0 && m <= nf4::kMaxSmallM, "nf4_matmul_small_m: m = ", m, " is outside [0, ",
               nf4::kMaxSmallM, "]");
  ENGINE_CHECK(n >= 0 && k >= 0, "nf4_matmul_small_m: negative size n = ", n, ", k = ", k);
  if (m == 0 || n == 0) return;
  ENGINE_CHECK(y != nullptr, "nf4_matmul_small_m: null output");
  if (k == 0) {  // an empty sum
    CUDA_CHECK(cudaMemsetAsync(y, 0, static_cast<size_t>(m * n) * sizeof(uint16_t), stream));
    return;
  }
  ENGINE_CHECK(x != nullptr && packed != nullptr, "nf4_matmul_small_m: null input");
  check_scales("nf4_matmul_small_m", scales);
  const nf4::MatmulPlan p = nf4::matmul_plan(m, n, k, aligned16(x) && aligned16(packed));
  ENGINE_CHECK(p.n_blocks <= 0x7fffffff, "nf4_matmul_small_m: n = ", n, " is too large");
  float* partial = nullptr;
  if (p.tensor_cores && p.splits > 1) {
    ENGINE_CHECK(workspace != nullptr && workspace_bytes >= p.workspace_bytes,
                 "nf4_matmul_small_m: needs a workspace of ", p.workspace_bytes, " bytes, got ",
                 workspace == nullptr ? 0 : workspace_bytes);
    partial = static_cast<float*>(workspace);
  }
  auto* yo = static_cast<uint16_t*>(y);
  const auto* xi = static_cast<const uint16_t*>(x);
  const int mi = static_cast<int>(m);
  switch (p.m_tiles) {
    case 1: launch_matmul<1>(p, yo, partial, xi, packed, scales, mi, n, k, stream); break;
    case 2: launch_matmul<2>(p, yo, partial, xi, packed, scales, mi, n, k, stream); break;
    case 3: launch_matmul<3>(p, yo, partial, xi, packed, scales, mi, n, k, stream); break;
    default: launch_matmul<4>(p, yo, partial, xi, packed, scales, mi, n, k, stream); break;
  }
}

}  // namespace kernels
