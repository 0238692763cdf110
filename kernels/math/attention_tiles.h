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
#include <cstdint>

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

// ---- document masking (packed sequences) ----------------------------------------
// doc_start[i] is the first token of query i's document; j is visible to i iff
// doc_start[i] <= j <= i. Documents are contiguous: doc_start[0] = 0 and doc_start[i]
// is doc_start[i - 1] or i, so doc_start is nondecreasing and every row sees itself.

HD bool attn_doc_start_valid(const int32_t* doc_start, int64_t seq) {
  for (int64_t i = 0; i < seq; ++i) {
    const int64_t prev = i == 0 ? 0 : doc_start[i - 1];
    if (doc_start[i] != prev && doc_start[i] != i) return false;
  }
  return true;
}

// The first key tile of width bc that a query tile visits: the one holding the document
// start of its first row (the smallest of its rows').
HD int attn_first_key_tile(int doc_start_q0, int bc) { return doc_start_q0 / bc; }

// One past the last query that sees key k: the first i > k with doc_start[i] > k (a new
// document began at or after k + 1), or seq. Binary search over the nondecreasing rows.
HD int attn_doc_end(const int32_t* doc_start, int seq, int k) {
  int lo = k + 1, hi = seq;  // doc_start[k] <= k: the answer lies in [k + 1, seq]
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (doc_start[mid] > k) hi = mid; else lo = mid + 1;
  }
  return lo;
}

// Query-major kernels (forward, dQ): a warp whose rows' documents start at doc_lo (first
// row) .. doc_hi (last row) sees some key of the tile [k0, k0 + bc) only if the tile
// ends after doc_lo, and needs the document mask when the tile starts before doc_hi.
HD bool attn_doc_sees_keys(int k0, int bc, int doc_lo) { return k0 + bc > doc_lo; }
HD bool attn_doc_masks_keys(int k0, int doc_hi) { return k0 < doc_hi; }

// Key-major kernel (dK/dV): a warp whose keys' documents end at end_lo (first key) ..
// end_hi (last key) is seen by some row of the tile [q0, q0 + br) only if the tile
// starts before end_hi, and needs the document mask when it ends after end_lo.
HD bool attn_doc_seen_by_rows(int q0, int end_hi) { return q0 < end_hi; }
HD bool attn_doc_masks_rows(int q0, int br, int end_lo) { return q0 + br > end_lo; }

}  // namespace kmath
