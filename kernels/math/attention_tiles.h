// Tile bookkeeping of the tensor-core attention kernels (kernels/attention_*.cu) as
// plain functions, so that CPU tests (tests/engine/test_attention_tiles.cpp) can check
// them without a GPU: the swizzled shared-memory layout, the per-lane ldmatrix row
// addresses for the three fragment kinds, and the causal tile schedule.
//
// Fragment conventions (PTX ISA, mma.m16n8k16 with 16-bit inputs, ldmatrix.m8n8.x4):
// ldmatrix.x4 loads four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of
// matrix i, and afterwards lane l holds in register i the elements (l/4, 2(l%4)) and
// (l/4, 2(l%4)+1) of matrix i (with .trans: (2(l%4), l/4) and (2(l%4)+1, l/4)).
#pragma once
#include "kernels/math/hd.h"

namespace kmath {

// Element offset of (row, col) in a [rows][d] bf16 tile whose 16-byte chunks are
// XOR-swizzled by the row: chunk c of row r sits at chunk position c ^ (r % 8).
HD int attn_swizzle(int row, int col, int d) {
  return row * d + ((((col >> 3) ^ (row & 7)) << 3) | (col & 7));
}

struct TileRC {
  int row, col;
};

// Row/column offset, within a 16 x 16 block, of the row that lane `lane` addresses:
//   a       A fragment of a row-major [m][k] tile (regs a0..a3 in mma order)
//   b_rows  B fragments of two n-blocks from a tile stored [n][k] (B = X^T): row = n, col = k;
//           regs: (n-block 0: b0, b1), (n-block 1: b0, b1)
//   b_cols  B fragments of two n-blocks from a tile stored [k][n] (B = X), with .trans:
//           row = k, col = n; regs as for b_rows
HD TileRC ldsm_a(int lane) { return {lane & 15, (lane >> 4) * 8}; }
HD TileRC ldsm_b_rows(int lane) { return {((lane >> 4) << 3) + (lane & 7), ((lane >> 3) & 1) * 8}; }
HD TileRC ldsm_b_cols(int lane) { return {((lane >> 3) & 1) * 8 + (lane & 7), (lane >> 4) * 8}; }

// ---- causal schedule ---------------------------------------------------------------
// Queries i and keys j of one head; j is visible to i iff j <= i (and both < seq).

// Key tiles of width bc that a query tile [q0, q0 + br) visits: those starting at or
// before its last row, and inside the sequence.
HD int attn_key_tiles(int q0, int br, int bc, int seq) {
  const int by_rows = (q0 + br + bc - 1) / bc, by_seq = (seq + bc - 1) / bc;
  return by_rows < by_seq ? by_rows : by_seq;
}

// The first query tile (of height br) that a key tile starting at k0 must visit.
HD int attn_first_query_tile(int k0, int br) { return k0 / br; }

// Some key >= k_first is visible to some query <= q_last (else skip the math).
HD bool attn_sees(int q_last, int k_first) { return k_first <= q_last; }

// Some key <= k_last is above the diagonal for some query >= q_first (mask needed).
HD bool attn_needs_mask(int q_first, int k_last) { return k_last > q_first; }

}  // namespace kmath
