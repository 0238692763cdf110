// The index math of the NF4 kernels (kernels/nf4.cu), kept apart from the kernels so that
// CPU tests (tests/engine/test_nf4_layout.cpp) can check it where no GPU is available:
//   - the launch plan of nf4_matmul_small_m (path, tiles, split-K, workspace),
//   - which k each lane feeds to which mma.sync fragment register, and the byte it reads,
//   - the shared-memory layout of the staged x tile,
//   - the decode of packed bytes into bf16 / f32 outputs,
//   - the test that decides when a parallel sum of the absmax vector is exact.
// Pure C++ plus HD (__host__ __device__) functions; no CUDA header is needed to include it.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/math/bf16.h"
#include "kernels/math/hd.h"
#include "kernels/math/nf4.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#endif

namespace kernels::nf4 {

// ---- dequantize ------------------------------------------------------------------------
// One warp handles a tile of 512 packed bytes (1024 values, 16 NF4 blocks): one 16-byte
// load per lane, staged through shared memory so that each 16-byte store of the warp covers
// 512 contiguous output bytes.
constexpr int kDequantThreads = 256;
constexpr int kDequantTileBytes = 512;
constexpr int kDequantTileValues = 2 * kDequantTileBytes;
static_assert(kDequantTileValues % kmath::kNf4Block == 0, "a tile holds whole NF4 blocks");
static_assert(kDequantTileValues / kmath::kNf4Block <= 32, "one lane decodes one block's scale");

// In a tile, lane l decodes the scale of block (l & 15); the 16-byte output chunk c (values
// c * per_store .. + per_store - 1, per_store = 8 for bf16, 4 for f32) takes it from this lane.
HD int dequant_scale_lane(int chunk, int per_store) {
  return chunk * per_store / kmath::kNf4Block;
}

// ---- matmul_small_m --------------------------------------------------------------------
constexpr int kMaxSmallM = 64;      // rows of x the direct kernel accepts
constexpr int kMmaM = 16, kMmaN = 8, kMmaK = 16;  // mma.sync.m16n8k16 bf16 -> f32
constexpr int kChunk = 128;         // k per warp step: 64 packed bytes per W row, 16 per lane
constexpr int kMatmulWarps = 4;
constexpr int kMatmulThreads = 32 * kMatmulWarps;
constexpr int kGenericWarps = 4;    // generic path: one warp per output column
constexpr int kTargetCtas = 512;    // split-K until about this many CTAs (~4 per SM)
constexpr int kMinChunksPerSplit = 4;
constexpr int kMaxSplits = 32;
// Shared-memory x tile: [16 * m_tiles rows][kChunk] bf16, with kXsPad elements inserted after
// each half row. The row stride (288 bytes = 2 lines + 2 units of 16 B) and the mid-row gap make
// the lanes' 16-byte reads conflict-free (see nf4.cu); segments stay 16-byte aligned for cp.async.
constexpr int kXsPad = 8;
constexpr int kXsRowStride = kChunk + 2 * kXsPad;  // 144 elements
static_assert((kXsRowStride * 2) % 16 == 0 && ((kChunk / 2 + kXsPad) * 2) % 16 == 0,
              "x tile segments must stay 16-byte aligned");
static_assert((kXsRowStride * 2 / 16) % 8 == 2, "row stride must shift banks by two 16-byte units");

HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// How nf4_matmul_small_m runs a shape.
//   tensor_cores  the mma.sync kernel: K % 128 == 0 and 16-byte aligned x and packed W.
//                 Grid [n_blocks, splits]; CTA = 4 warps, each warp NT n-tiles of 8 W rows,
//                 so rows_per_cta = 32 NT; split s covers chunks [chunk_begin(s), chunk_begin(s+1)).
//                 With splits > 1 each split writes fp32 partials [splits, m, n] to the
//                 workspace and a second kernel sums them in split order (deterministic).
//   otherwise     the generic kernel: one warp per output column, any K (the tiny models).
// The split count depends on the shape only, so results are the same on every device.
struct MatmulPlan {
  bool tensor_cores = false;
  int m_tiles = 1;            // ceil(m / 16), at least 1
  int n_tiles_per_warp = 1;   // NT (tensor-core path)
  int64_t rows_per_cta = 0;   // W rows (output columns) per CTA
  int64_t n_blocks = 0;       // grid.x
  int64_t chunks = 0;         // K / 128 (tensor-core path)
  int splits = 1;             // grid.y
  size_t workspace_bytes = 0; // fp32 partials when splits > 1
};

inline MatmulPlan matmul_plan(int64_t m, int64_t n, int64_t k, bool aligned) {
  MatmulPlan p;
  p.m_tiles = m <= 0 ? 1 : static_cast<int>(ceil_div(m, kMmaM));
  const bool k_ok = k > 0 && k % kChunk == 0;
  if (k_ok) {
    // The workspace is sized whenever K allows the tensor-core path, whatever the pointers'
    // alignment, so that callers can allocate it from the shape alone.
    p.n_tiles_per_warp = p.m_tiles <= 2 ? 4 : 2;  // keeps accumulators at 32 registers
    p.rows_per_cta = static_cast<int64_t>(kMatmulWarps) * kMmaN * p.n_tiles_per_warp;
    p.n_blocks = ceil_div(n, p.rows_per_cta);
    p.chunks = k / kChunk;
    const int64_t max_splits = p.chunks / kMinChunksPerSplit;
    int64_t splits = p.n_blocks > 0 ? ceil_div(kTargetCtas, p.n_blocks) : 1;
    if (splits > max_splits) splits = max_splits;
    if (splits > kMaxSplits) splits = kMaxSplits;
    p.splits = splits < 1 ? 1 : static_cast<int>(splits);
    if (p.splits > 1)
      p.workspace_bytes = static_cast<size_t>(p.splits) * static_cast<size_t>(m > 0 ? m : 0) *
                          static_cast<size_t>(n > 0 ? n : 0) * sizeof(float);
  }
  p.tensor_cores = k_ok && aligned;
  if (!p.tensor_cores) {
    p.n_tiles_per_warp = 1;
    p.rows_per_cta = kGenericWarps;
    p.n_blocks = ceil_div(n, kGenericWarps);
    p.chunks = 0;
    p.splits = 1;
  }
  return p;
}

// First chunk of split s (the last split ends at chunk_begin(chunks, splits, splits)).
HD int64_t chunk_begin(int64_t chunks, int splits, int s) { return chunks * s / splits; }

// Fragment map of the tensor-core path. mma.sync.m16n8k16.row.col (PTX ISA, "Matrix
// Fragments for mma.m16n8k16"): lane = 4 g + t; A register r holds rows g + 8 (r & 1),
// k pair t + 4 (r >> 1); B register r holds column g, k pair t + 4 r; D register r holds
// row g + 8 (r >> 1), column 2 t + (r & 1). The sum over k does not care how k is ordered, so
// the mma's 16 k slots are mapped onto the data to make the loads contiguous: in a chunk of
// 128, lane t owns k in [32 t, 32 t + 32) (16 bytes of its W row), and at step c = 0..7 its
// k pair p = 0, 1 (B register p; A registers 2p, 2p+1) is k = 32 t + 4 c + 2 p + {0, 1}.
// Both operands use the same map, so every product pairs x[m, k] with W[n, k].
HD int mma_k(int t, int c, int pair, int e) { return 32 * t + 4 * c + 2 * pair + e; }

// Lane t's 16 packed bytes of W row `row` in chunk kc (values k = 128 kc + 32 t .. + 31), as a
// byte offset into packed W [n, k], and the NF4 block they lie in (K % 128 == 0).
HD int64_t lane_w_byte(int64_t row, int64_t kc, int t, int64_t k) {
  return row * (k / 2) + kc * (kChunk / 2) + 16 * t;
}
HD int64_t lane_w_block(int64_t row, int64_t kc, int t, int64_t k) {
  return row * (k / kmath::kNf4Block) + kc * (kChunk / kmath::kNf4Block) + t / 2;
}

// Output element of D register r (0..3) of m-tile mt, n-tile nt for lane (g, t): row of y
// and column relative to the warp's first W row.
HD int d_row(int mt, int g, int r) { return mt * kMmaM + g + 8 * (r >> 1); }
HD int d_col(int nt, int t, int r) { return nt * kMmaN + 2 * t + (r & 1); }

// Element offset of x tile element (row, k), k in [0, 128).
HD int xs_offset(int row, int k) {
  return row * kXsRowStride + k + (k >= kChunk / 2 ? kXsPad : 0);
}

// Two floats as a bf16x2 register: `lo` in bits 0-15 (the lower k / lower address).
// Round to nearest even; bit-identical with kmath::float_to_bf16_bits except NaN payloads.
HD uint32_t pack_bf16x2(float lo, float hi) {
#if defined(__CUDA_ARCH__)
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
#else
  return static_cast<uint32_t>(kmath::float_to_bf16_bits(lo)) |
         (static_cast<uint32_t>(kmath::float_to_bf16_bits(hi)) << 16);
#endif
}

// code * scale in fp32, one rounding (what dequantize_nf4 computes on the CPU).
HD float scale_code(float code, float scale) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(code, scale);
#else
  return code * scale;
#endif
}

// B fragment of step c: the lane's 16 packed bytes w (4 little-endian words, bytes of k
// 32 t .. 32 t + 31, two per byte, high nibble first), its block's scale, the code table.
// Bytes 2c and 2c+1 hold k = 32 t + 4 c + {0, 1} and {2, 3}: register 0 and register 1.
HD void b_fragment(const uint32_t (&w)[4], int c, float scale, const float* lut, uint32_t (&b)[2]) {
  const uint32_t pair = (w[c >> 1] >> (16 * (c & 1))) & 0xffffu;
  for (int r = 0; r < 2; ++r) {
    const uint32_t byte = (pair >> (8 * r)) & 0xffu;
    b[r] = pack_bf16x2(scale_code(lut[byte >> 4], scale), scale_code(lut[byte & 15u], scale));
  }
}

// A fragment of step c from the lane's 16-byte x slices of rows g (lo) and g + 8 (hi), each
// holding k = 32 t + 8 (c / 2) .. + 7 (words of two bf16, lower k in the low half).
HD void a_fragment(const uint32_t (&lo)[4], const uint32_t (&hi)[4], int c, uint32_t (&a)[4]) {
  const int s = 2 * (c & 1);
  a[0] = lo[s];      // row g,     k pair t      -> k 32t + 4c + {0,1}
  a[1] = hi[s];      // row g + 8, k pair t
  a[2] = lo[s + 1];  // row g,     k pair t + 4  -> k 32t + 4c + {2,3}
  a[3] = hi[s + 1];  // row g + 8, k pair t + 4
}

// Dequantize output chunks: 4 packed bytes (one word, byte i -> values 2i, 2i+1) to 8 bf16
// (one 16-byte store), or 2 packed bytes to 4 f32.
HD void decode_word_bf16(uint32_t word, float scale, const float* lut, uint32_t (&out)[4]) {
  for (int i = 0; i < 4; ++i) {
    const uint32_t byte = (word >> (8 * i)) & 0xffu;
    out[i] = pack_bf16x2(scale_code(lut[byte >> 4], scale), scale_code(lut[byte & 15u], scale));
  }
}

HD void decode_half_f32(uint32_t two_bytes, float scale, const float* lut, float (&out)[4]) {
  for (int i = 0; i < 2; ++i) {
    const uint32_t byte = (two_bytes >> (8 * i)) & 0xffu;
    out[2 * i] = scale_code(lut[byte >> 4], scale);
    out[2 * i + 1] = scale_code(lut[byte & 15u], scale);
  }
}

// ---- the double-quantization offset ----------------------------------------------------
// The CPU reference takes offset = float(sum / n) with the sum accumulated in double in index
// order. A parallel sum equals it bit for bit whenever no partial sum rounds: every absmax a is
// a non-negative float, an integer multiple of its ulp 2^(max(E, 1) - 150) (E its biased
// exponent), hence of g = 2^(Emin - 150) with Emin the least over the non-zero values. Any
// partial sum, in any order, is a multiple of g no larger than the total S; if S < 2^53 g each
// one is an integer times g below 2^53 g, representable in double, so no addition rounds and
// every order gives S exactly. The check uses the computed sum against 2^52 g: if S were
// >= 2^53 g the computed sum (relative error far below 1/2) would exceed 2^52 g.
// Otherwise the kernel falls back to the sequential sum in index order.

// Biased exponent, clamped to 1 for subnormals (their ulp is that of exponent 1).
HD int ulp_exponent_key(uint32_t float_bits) {
  const int e = static_cast<int>((float_bits >> 23) & 0xffu);
  return e < 1 ? 1 : e;
}

// True when a sum of non-negative floats whose least non-zero ulp key is `min_key` (256 when
// all are zero) and whose computed double sum is `sum` is exact in any order.
HD bool offset_sum_is_exact(double sum, int min_key) {
  if (!(sum >= 0.0)) return false;  // NaN
  if (min_key > 255) return sum == 0.0;
  // 2^52 * 2^(min_key - 150) = 2^(min_key - 98), in [2^-97, 2^157]: a normal double.
  return sum < ldexp(1.0, min_key - 98);
}

}  // namespace kernels::nf4
