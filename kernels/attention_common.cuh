// Device building blocks shared by the attention kernels (attention_forward.cu,
// attention_backward.cu, attention_fallback.cu): tile shapes, the swizzled shared-
// memory layout, fragment loads and warp GEMMs over the tensor-core primitives of
// kernels/ptx.cuh (mma.sync.m16n8k16, bf16 in, fp32 accumulate; fragment layouts
// there), and the internal launchers that the public ones (kernels/attention.h)
// dispatch to.
//
// Two adjacent C tiles (n-blocks 2c, 2c+1) rounded to bf16 are exactly the A fragment
// of a 16x16 k-chunk: that is how P (and dS) feed the next product from registers.
//
// Shared-memory tiles are [rows][D] bf16, rows of D * 2 bytes, and the 16-byte chunk c of
// row r is stored at chunk position c ^ (r % 8). ldmatrix reads 8 rows at one logical
// chunk per phase; the XOR spreads them over 8 distinct 16-byte bank groups, so neither
// ldmatrix nor the cp.async fills conflict.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/attention.h"
#include "kernels/math/attention_tiles.h"
#include "kernels/math/online_softmax.h"
#include "kernels/ptx.cuh"

namespace kernels::attn {

using bf16 = __nv_bfloat16;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Problem dimensions as the kernels see them (int: check_shape has checked that every
// count fits; global offsets are computed in int64).
using Dims = kmath::AttentionDimsOf<int>;

// ---- tile shapes -----------------------------------------------------------------
// Forward and dQ: a block owns kBr = 16 kWarps query rows (16 per warp) and streams
// key tiles of kBc. dK/dV: a block owns kBc keys (16 per warp) and streams query
// tiles of kBr. Shared memory per block is given by kSmem.
//
// The backward kernels take the streamed tile's rows (kStream) as a parameter: 64 where
// the device's shared memory per block allows, else 32. At D = 128 the 64-row tiles
// need 128 KiB (dQ) and 129 KiB (dK/dV), more than the 99 KiB of sm_86 and sm_89 (RTX
// A6000, RTX 4090, RTX 6000 Ada, which run the sm_80 binary); the 32-row tiles need 96
// and 96.5 KiB. The blocks and the order of every sum stay the same.
template <int D>
struct FwdTiles {
  static constexpr int kWarps = 8, kThreads = 32 * kWarps, kBr = 16 * kWarps, kBc = 64;
  static constexpr int kSmem = (kBr + 2 * kBc) * D * 2;  // Q, K, V
};
template <int D, int kStream = 64>
struct DqTiles {
  static constexpr int kWarps = 8, kThreads = 32 * kWarps, kBr = 16 * kWarps, kBc = kStream;
  static constexpr int kSmem = (2 * kBr + 4 * kBc) * D * 2;  // Q, dO, 2 x (K, V)
};
template <int D, int kStream = 64>
struct DkvTiles {
  static constexpr int kWarps = 8, kThreads = 32 * kWarps, kBc = 16 * kWarps, kBr = kStream;
  // K, V, 2 x (Q, dO), 2 x (lse, delta)
  static constexpr int kSmem = (2 * kBc + 4 * kBr) * D * 2 + 4 * kBr * 4;
};

// The smallest opt-in shared memory per block of the GPUs the kernels are built for
// (sm_86 and sm_89; sm_80 has 163 KiB, sm_90 227 KiB): every kernel has a tile shape
// that fits it.
constexpr int kMinSharedPerBlock = 99 * 1024;
static_assert(FwdTiles<128>::kSmem <= kMinSharedPerBlock, "forward tiles fit every GPU");
static_assert(DqTiles<128, 32>::kSmem <= kMinSharedPerBlock &&
                  DkvTiles<128, 32>::kSmem <= kMinSharedPerBlock,
              "the backward's 32-row tiles fit every GPU");

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// ---- shared-memory layout ---------------------------------------------------------

// Element offset of (row, col) in a swizzled [rows][D] bf16 tile.
template <int D>
__device__ __forceinline__ int swz(int row, int col) {
  return kmath::attn_swizzle(row, col, D);
}

using ptx::cp_async16;
using ptx::cp_async4;
using ptx::cp_async_commit;
using ptx::cp_async_wait;
using ptx::ldmatrix_x4;
using ptx::ldmatrix_x4_trans;
using ptx::mma_bf16;
using ptx::pack_bf16;

// Queues the copy of `rows` rows of D bf16 (row i at g + i * stride elements) into a
// swizzled tile; rows >= valid_rows are zero-filled (and read nothing).
template <int D, int kRows, int kThreads>
__device__ __forceinline__ void load_tile(bf16* tile, const bf16* g, int64_t stride,
                                          int valid_rows, int tid) {
  constexpr int kChunks = D / 8;
  static_assert(kRows * kChunks % kThreads == 0, "whole rounds of 16-byte copies");
#pragma unroll
  for (int i = 0; i < kRows * kChunks / kThreads; ++i) {
    const int c = tid + i * kThreads;
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool ok = r < valid_rows;
    cp_async16(tile + swz<D>(r, col), g + (ok ? r : 0) * stride + col, ok);
  }
}

// ---- tensor-core fragments (wrappers and layouts in kernels/ptx.cuh) ----------------

// A 16-row A fragment at rows row0.., k columns k0..k0+15 of a swizzled tile
// (lanes 0-15 address rows 0-15 at k0, lanes 16-31 the same rows at k0 + 8).
template <int D>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* tile, int row0, int k0,
                                       int lane) {
  const kmath::TileRC at = kmath::ldsm_a(lane);
  ldmatrix_x4(a, tile + swz<D>(row0 + at.row, k0 + at.col));
}

// B fragments of two n-blocks (rows n0..n0+15 of the tile are the n index, columns
// k0..k0+15 the k index): b[0], b[1] for n-block n0, b[2], b[3] for n0 + 8. Used for
// B = X^T with X stored [n][k] (K in Q K^T, V in dO V^T, Q in K Q^T, ...).
template <int D>
__device__ __forceinline__ void load_b_rows(uint32_t (&b)[4], const bf16* tile, int n0, int k0,
                                            int lane) {
  const kmath::TileRC at = kmath::ldsm_b_rows(lane);
  ldmatrix_x4(b, tile + swz<D>(n0 + at.row, k0 + at.col));
}

// B fragments of two n-blocks for B = X with X stored [k][n] (V in P V, K in dS K,
// dO in P^T dO, Q in dS^T Q): rows k0..k0+15, columns n0..n0+15, transposed on load.
template <int D>
__device__ __forceinline__ void load_b_cols(uint32_t (&b)[4], const bf16* tile, int k0, int n0,
                                            int lane) {
  const kmath::TileRC at = kmath::ldsm_b_cols(lane);
  ldmatrix_x4_trans(b, tile + swz<D>(k0 + at.row, n0 + at.col));
}

// acc[16 x 8*kN] += A[16 x D] B, A from rows a_row0.. of tile_a, B = X^T with X the
// rows 0..8*kN-1 of tile_b (both [.][D]): S = Q K^T and its relatives.
template <int D, int kN>
__device__ __forceinline__ void gemm_rows(float (&acc)[kN][4], const bf16* tile_a, int a_row0,
                                          const bf16* tile_b, int lane) {
#pragma unroll
  for (int kk = 0; kk < D; kk += 16) {
    uint32_t a[4];
    load_a<D>(a, tile_a, a_row0, kk, lane);
#pragma unroll
    for (int nb = 0; nb < kN; nb += 2) {
      uint32_t b[4];
      load_b_rows<D>(b, tile_b, nb * 8, kk, lane);
      mma_bf16(acc[nb], a, b[0], b[1]);
      mma_bf16(acc[nb + 1], a, b[2], b[3]);
    }
  }
}

// acc[16 x D] += P[16 x 8*kN] X, P in registers (C layout, rounded to bf16 here), X the
// rows 0..8*kN-1 of a [.][D] tile: O += P V and its relatives.
template <int D, int kN>
__device__ __forceinline__ void gemm_p_cols(float (&acc)[D / 8][4], const float (&p)[kN][4],
                                            const bf16* tile_x, int lane) {
#pragma unroll
  for (int kc = 0; kc < kN / 2; ++kc) {
    const uint32_t a[4] = {pack_bf16(p[2 * kc][0], p[2 * kc][1]),
                           pack_bf16(p[2 * kc][2], p[2 * kc][3]),
                           pack_bf16(p[2 * kc + 1][0], p[2 * kc + 1][1]),
                           pack_bf16(p[2 * kc + 1][2], p[2 * kc + 1][3])};
#pragma unroll
    for (int dn = 0; dn < D / 8; dn += 2) {
      uint32_t b[4];
      load_b_cols<D>(b, tile_x, kc * 16, dn * 8, lane);
      mma_bf16(acc[dn], a, b[0], b[1]);
      mma_bf16(acc[dn + 1], a, b[2], b[3]);
    }
  }
}

// Writes a warp's 16 x D fp32 accumulator (times `mul`), rounded to bf16, into rows
// row0..row0+15 of a swizzled tile that only this warp uses, then copies rows with
// global index first_row + r < seq to g (row r at g + r * stride) with 16-byte stores.
template <int D>
__device__ __forceinline__ void store_rows_bf16(bf16* tile, int row0, const float (&acc)[D / 8][4],
                                                float mul, bf16* g, int64_t stride,
                                                int valid_rows, int lane) {
  const int gq = lane >> 2, t = lane & 3;
  __syncwarp();
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      *reinterpret_cast<uint32_t*>(tile + swz<D>(row0 + gq + 8 * h, dn * 8 + 2 * t)) =
          pack_bf16(acc[dn][2 * h] * mul, acc[dn][2 * h + 1] * mul);
  __syncwarp();
  constexpr int kChunks = D / 8;
#pragma unroll
  for (int i = 0; i < 16 * kChunks / 32; ++i) {
    const int c = lane + 32 * i;
    const int r = c / kChunks, col = (c % kChunks) * 8;
    if (r < valid_rows)
      *reinterpret_cast<uint4*>(g + r * stride + col) =
          *reinterpret_cast<const uint4*>(tile + swz<D>(row0 + r, col));
  }
}

// ---- internal launchers -------------------------------------------------------------

// Document starts one warp of a query tile needs (kDoc, packed sequences): the tile's
// first key tile, the warp's first and last rows' starts, and this lane's two rows'
// (gq and gq + 8). Rows past T clamp to the last: they are never stored.
struct WarpDocs {
  int kt_begin = 0, lo = 0, hi = 0, row[2] = {0, 0};
};
template <bool kDoc, int kBc>
__device__ inline WarpDocs warp_docs(const int32_t* doc_start, int b, int seq, int q0, int row0,
                                     int gq) {
  WarpDocs w;
  if constexpr (kDoc) {
    const int32_t* ds = doc_start + int64_t(b) * seq;
    auto at = [&](int i) { return ds[i < seq ? i : seq - 1]; };
    w.kt_begin = kmath::attn_first_key_tile(ds[q0], kBc);
    w.lo = at(row0);
    w.hi = at(row0 + 15);
    w.row[0] = at(row0 + gq);
    w.row[1] = at(row0 + gq + 8);
  }
  return w;
}

// Throws kernels::Error unless the shape and type are ones the launchers take.
void check_shape(const kmath::AttentionDims& s, ElemType type, const char* op);

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The tensor-core path (bf16, D 64 or 128).
// doc_start: i32 [B, T] document starts of packed sequences (kernels/attention.h), or
// nullptr for plain causal attention.
void fast_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                  const Dims& d, float scale, const int32_t* doc_start, cudaStream_t stream);
// The fallback path (f32 or bf16 storage, any D <= kAttentionMaxHeadDim, fp32 math).
// The backward needs B * Hq * T floats of workspace (the row statistic delta).
void fallback_forward(void* out, float* lse, const void* q, const void* k, const void* v,
                      ElemType type, const Dims& d, float scale, const int32_t* doc_start,
                      cudaStream_t stream);
void fallback_backward(void* dq, void* dk, void* dv, const void* q, const void* k, const void* v,
                       const float* lse, const void* dout, ElemType type, const Dims& d,
                       float scale, const int32_t* doc_start, float* delta, cudaStream_t stream);

}  // namespace kernels::attn
