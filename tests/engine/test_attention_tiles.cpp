// CPU checks of the attention kernels' tile bookkeeping (kernels/math/attention_tiles.h),
// which the GPU tests cannot isolate: the swizzled shared-memory layout, the ldmatrix
// lane addresses composed into the kernels' two warp-level products (emulating
// ldmatrix and mma.sync m16n8k16 from their PTX definitions), and the causal schedule
// of the forward/dQ kernels (query tile owns, key tiles stream) and of the dK/dV kernel
// (key tile owns, query tiles stream): every visible (query, key) pair is computed
// exactly once, and every pair above the diagonal is masked.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <set>
#include <vector>

#include "kernels/math/attention_tiles.h"

namespace {

using kmath::TileRC;

// A register of two b16 elements (lo = lower column index), as values.
struct Reg {
  float lo = 0, hi = 0;
};
using WarpRegs4 = std::array<std::array<Reg, 4>, 32>;

// ldmatrix.sync.aligned.m8n8.x4[.trans].b16 from a tile of floats: lane 8i + r gives the
// element offset of row r of matrix i (8 consecutive elements). Checks alignment and
// that each 8-lane phase hits 8 distinct 16-byte bank groups (no bank conflict).
WarpRegs4 ldmatrix_x4(const std::vector<float>& tile, const std::array<int, 32>& addr, bool trans) {
  for (int i = 0; i < 4; ++i) {
    std::set<int> groups;
    for (int r = 0; r < 8; ++r) {
      const int a = addr[8 * i + r];
      EXPECT_EQ(a % 8, 0) << "ldmatrix row address not 16-byte aligned";
      groups.insert((a * 2 / 16) % 8);
    }
    EXPECT_EQ(groups.size(), 8u) << "bank conflict in ldmatrix phase " << i;
  }
  WarpRegs4 out;
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      auto m = [&](int row, int col) { return tile[size_t(addr[8 * i + row] + col)]; };
      if (!trans)
        out[l][i] = {m(l / 4, 2 * (l % 4)), m(l / 4, 2 * (l % 4) + 1)};
      else
        out[l][i] = {m(2 * (l % 4), l / 4), m(2 * (l % 4) + 1, l / 4)};
    }
  return out;
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: c += A B with the fragment
// layouts of the PTX ISA (g = lane / 4, t = lane % 4):
//   A: reg0 (g, 2t..), reg1 (g+8, 2t..), reg2 (g, 2t+8..), reg3 (g+8, 2t+8..)
//   B: reg0 (k 2t.., n g), reg1 (k 2t+8.., n g)      C: c0,c1 (g, 2t..), c2,c3 (g+8, 2t..)
void mma(std::array<std::array<float, 4>, 32>& c, const std::array<std::array<Reg, 4>, 32>& a,
         const std::array<std::array<Reg, 2>, 32>& b) {
  double A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const int ar[4] = {g, g + 8, g, g + 8}, ac[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int r = 0; r < 4; ++r) A[ar[r]][ac[r]] = a[l][r].lo, A[ar[r]][ac[r] + 1] = a[l][r].hi;
    for (int r = 0; r < 2; ++r) B[2 * t + 8 * r][g] = b[l][r].lo, B[2 * t + 8 * r + 1][g] = b[l][r].hi;
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int e = 0; e < 4; ++e) {
      const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
      double s = 0;
      for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
      c[l][e] += float(s);
    }
  }
}

// A [rows][d] tile with small integer values (exact in fp32 sums), stored swizzled.
struct Tile {
  int rows, d;
  std::vector<float> logical, stored;
  Tile(int rows_, int d_, int seed) : rows(rows_), d(d_), logical(size_t(rows_ * d_)), stored(logical.size()) {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < d; ++c) {
        const float v = float((r * 7 + c * 3 + seed * 11) % 9 - 4);
        logical[size_t(r * d + c)] = v;
        stored[size_t(kmath::attn_swizzle(r, c, d))] = v;
      }
  }
  float at(int r, int c) const { return logical[size_t(r * d + c)]; }
};

TEST(AttentionTiles, SwizzleIsABijectionWithinEachRow) {
  for (int d : {64, 128})
    for (int r = 0; r < 64; ++r) {
      std::set<int> seen;
      for (int c = 0; c < d; ++c) {
        const int at = kmath::attn_swizzle(r, c, d);
        EXPECT_GE(at, r * d);
        EXPECT_LT(at, (r + 1) * d);
        if (c % 8) {  // 16-byte chunks stay whole
          EXPECT_EQ(at, kmath::attn_swizzle(r, c - c % 8, d) + c % 8);
        }
        seen.insert(at);
      }
      EXPECT_EQ(seen.size(), size_t(d));
    }
}

// The kernels' S = A X^T: A rows a_row0.., X rows 0..8 kN - 1, k over the head dim
// (attention_common.cuh gemm_rows: one A fragment per 16 columns, B fragments of two
// n-blocks per ldmatrix, regs 0,1 to n-block nb and 2,3 to nb + 1).
template <int kN>
void check_gemm_rows(int d, int a_rows, int a_row0) {
  const Tile a(a_rows, d, 1), x(8 * kN, d, 2);
  std::vector<std::array<std::array<float, 4>, 32>> acc(kN);
  for (auto& c : acc) for (auto& l : c) l.fill(0.0f);
  for (int kk = 0; kk < d; kk += 16) {
    std::array<int, 32> addr_a;
    for (int l = 0; l < 32; ++l) {
      const TileRC rc = kmath::ldsm_a(l);
      addr_a[l] = kmath::attn_swizzle(a_row0 + rc.row, kk + rc.col, d);
    }
    const WarpRegs4 fa = ldmatrix_x4(a.stored, addr_a, false);
    for (int nb = 0; nb < kN; nb += 2) {
      std::array<int, 32> addr_b;
      for (int l = 0; l < 32; ++l) {
        const TileRC rc = kmath::ldsm_b_rows(l);
        addr_b[l] = kmath::attn_swizzle(nb * 8 + rc.row, kk + rc.col, d);
      }
      const WarpRegs4 fb = ldmatrix_x4(x.stored, addr_b, false);
      std::array<std::array<Reg, 2>, 32> b0, b1;
      for (int l = 0; l < 32; ++l) b0[l] = {fb[l][0], fb[l][1]}, b1[l] = {fb[l][2], fb[l][3]};
      mma(acc[nb], fa, b0);
      mma(acc[nb + 1], fa, b1);
    }
  }
  for (int nb = 0; nb < kN; ++nb)
    for (int l = 0; l < 32; ++l)
      for (int e = 0; e < 4; ++e) {
        const int r = l / 4 + 8 * (e >> 1), n = nb * 8 + 2 * (l % 4) + (e & 1);
        double ref = 0;
        for (int k = 0; k < d; ++k) ref += double(a.at(a_row0 + r, k)) * x.at(n, k);
        ASSERT_EQ(acc[nb][l][e], float(ref)) << "d " << d << " row " << r << " col " << n;
      }
}

// The kernels' O += P X: P (16 x 8 kN) in the C layout feeds the A fragments of k-chunk
// kc from n-blocks 2kc, 2kc + 1 (attention_common.cuh gemm_p_cols); X [8 kN][d] rows
// are loaded with .trans, two d-blocks per ldmatrix.
template <int kN>
void check_gemm_p_cols(int d) {
  const Tile x(8 * kN, d, 3);
  std::vector<std::array<std::array<float, 4>, 32>> p(kN);  // C layout
  auto p_at = [](int r, int c) { return float((r * 5 + c * 2) % 7 - 3); };
  for (int nb = 0; nb < kN; ++nb)
    for (int l = 0; l < 32; ++l)
      for (int e = 0; e < 4; ++e)
        p[nb][l][e] = p_at(l / 4 + 8 * (e >> 1), nb * 8 + 2 * (l % 4) + (e & 1));
  std::vector<std::array<std::array<float, 4>, 32>> acc(d / 8);
  for (auto& c : acc) for (auto& l : c) l.fill(0.0f);
  for (int kc = 0; kc < kN / 2; ++kc) {
    std::array<std::array<Reg, 4>, 32> fa;
    for (int l = 0; l < 32; ++l)
      fa[l] = {Reg{p[2 * kc][l][0], p[2 * kc][l][1]}, Reg{p[2 * kc][l][2], p[2 * kc][l][3]},
               Reg{p[2 * kc + 1][l][0], p[2 * kc + 1][l][1]},
               Reg{p[2 * kc + 1][l][2], p[2 * kc + 1][l][3]}};
    for (int dn = 0; dn < d / 8; dn += 2) {
      std::array<int, 32> addr;
      for (int l = 0; l < 32; ++l) {
        const TileRC rc = kmath::ldsm_b_cols(l);
        addr[l] = kmath::attn_swizzle(kc * 16 + rc.row, dn * 8 + rc.col, d);
      }
      const WarpRegs4 fb = ldmatrix_x4(x.stored, addr, true);
      std::array<std::array<Reg, 2>, 32> b0, b1;
      for (int l = 0; l < 32; ++l) b0[l] = {fb[l][0], fb[l][1]}, b1[l] = {fb[l][2], fb[l][3]};
      mma(acc[dn], fa, b0);
      mma(acc[dn + 1], fa, b1);
    }
  }
  for (int dn = 0; dn < d / 8; ++dn)
    for (int l = 0; l < 32; ++l)
      for (int e = 0; e < 4; ++e) {
        const int r = l / 4 + 8 * (e >> 1), c = dn * 8 + 2 * (l % 4) + (e & 1);
        double ref = 0;
        for (int j = 0; j < 8 * kN; ++j) ref += double(p_at(r, j)) * x.at(j, c);
        ASSERT_EQ(acc[dn][l][e], float(ref)) << "d " << d << " row " << r << " col " << c;
      }
}

TEST(AttentionTiles, FragmentAddressesComposeIntoTheProducts) {
  for (int d : {64, 128}) {
    check_gemm_rows<8>(d, 128, 16 * 5);   // forward / dQ: S = Q_w K^T, 64 keys
    check_gemm_rows<8>(d, 128, 16 * 7);   // dK/dV: S^T = K_w Q^T, 64 queries
    check_gemm_p_cols<8>(d);              // O += P V, dQ += dS K, dV += P^T dO, dK += dS^T Q
  }
}

// Forward and dQ kernels: block = query tile of br rows (16 per warp), key tiles of bc
// from 0 to attn_key_tiles; a warp computes a tile iff attn_sees, masks iff
// attn_needs_mask. Every visible pair (j <= i < seq) must be computed exactly once,
// unmasked; every computed pair above the diagonal must fall in a masked tile.
void check_query_major(int br, int bc, int seq) {
  std::vector<int> count(size_t(seq) * seq, 0);
  for (int q0 = 0; q0 < seq; q0 += br)
    for (int row0 = q0; row0 < q0 + br; row0 += 16) {
      const int n_kt = kmath::attn_key_tiles(q0, br, bc, seq);
      for (int kt = 0; kt < n_kt; ++kt) {
        const int k0 = kt * bc;
        ASSERT_LT(k0, seq);
        if (!kmath::attn_sees(row0 + 15, k0)) {
          for (int i = row0; i < row0 + 16; ++i)
            for (int j = k0; j < k0 + bc; ++j) ASSERT_FALSE(j <= i && i < seq && j < seq);
          continue;
        }
        const bool masked = kmath::attn_needs_mask(row0, k0 + bc - 1);
        for (int i = row0; i < std::min(row0 + 16, seq); ++i)
          for (int j = k0; j < k0 + bc; ++j) {
            if (j > i) {  // includes padded keys j >= seq
              ASSERT_TRUE(masked) << "unmasked pair above the diagonal i " << i << " j " << j;
              continue;
            }
            ++count[size_t(i) * seq + j];
          }
      }
      // Key tiles past n_kt hold no visible pair of this warp.
      for (int i = row0; i < std::min(row0 + 16, seq); ++i)
        ASSERT_LT(i, n_kt * bc) << "row " << i << " misses its diagonal key tile";
    }
  for (int i = 0; i < seq; ++i)
    for (int j = 0; j <= i; ++j) ASSERT_EQ(count[size_t(i) * seq + j], 1) << i << "," << j;
}

// dK/dV kernel: block = key tile of bc keys (16 per warp), query tiles of br from
// attn_first_query_tile to the end; masking also covers padded queries (i >= seq).
void check_key_major(int br, int bc, int seq) {
  std::vector<int> count(size_t(seq) * seq, 0);
  for (int k0 = 0; k0 < seq; k0 += bc)
    for (int key0 = k0; key0 < k0 + bc; key0 += 16) {
      const int first = kmath::attn_first_query_tile(k0, br);
      for (int i = 0; i < first * br; ++i)  // skipped query tiles see none of the keys
        for (int j = key0; j < std::min(key0 + 16, seq); ++j) ASSERT_GT(j, i);
      for (int q0 = first * br; q0 < seq; q0 += br) {
        if (!kmath::attn_sees(q0 + br - 1, key0)) {
          for (int i = q0; i < q0 + br; ++i)
            for (int j = key0; j < key0 + 16; ++j) ASSERT_FALSE(j <= i && i < seq && j < seq);
          continue;
        }
        const bool masked = kmath::attn_needs_mask(q0, key0 + 15) || q0 + br > seq;
        for (int i = q0; i < q0 + br; ++i)
          for (int j = key0; j < std::min(key0 + 16, seq); ++j) {
            if (j > i || i >= seq) {
              ASSERT_TRUE(masked) << "unmasked pair i " << i << " j " << j;
              continue;
            }
            ++count[size_t(i) * seq + j];
          }
      }
    }
  for (int i = 0; i < seq; ++i)
    for (int j = 0; j <= i; ++j) ASSERT_EQ(count[size_t(i) * seq + j], 1) << i << "," << j;
}

TEST(AttentionTiles, CausalScheduleCoversEveryVisiblePairOnce) {
  for (int seq : {1, 2, 15, 16, 17, 63, 64, 65, 127, 128, 129, 200, 300, 513}) {
    check_query_major(128, 64, seq);  // FwdTiles / DqTiles
    check_key_major(64, 128, seq);    // DkvTiles
    check_query_major(64, 64, seq);   // other shapes the schedule must also handle
    check_key_major(32, 64, seq);
  }
}

// ---- document masking (packed sequences) -------------------------------------------
// Row i sees keys doc_start[i] <= j <= i (kernels/math/attention_tiles.h).

// doc_start of documents with the given lengths, cycled to fill seq.
std::vector<int32_t> doc_layout(int seq, const std::vector<int>& lengths) {
  std::vector<int32_t> ds;
  for (int t = 0, n = 0, start = 0; t < seq; ++t) {
    if (t - start == lengths[size_t(n) % lengths.size()]) start = t, ++n;
    ds.push_back(start);
  }
  return ds;
}

bool doc_visible(const std::vector<int32_t>& ds, int i, int j) {
  const int seq = int(ds.size());
  return i < seq && j < seq && j <= i && j >= ds[size_t(i)];
}

// Forward and dQ with doc_start: key tiles from attn_first_key_tile of the block's first
// row; a warp computes a tile iff attn_sees and attn_doc_sees_keys (rows' first document
// start doc_lo), masks iff attn_needs_mask or attn_doc_masks_keys (last row's doc_hi);
// the element mask is j > i or j < doc_start[i]. Rows past seq clamp to the last row.
void check_query_major_docs(int br, int bc, const std::vector<int32_t>& ds) {
  const int seq = int(ds.size());
  auto at = [&](int i) { return ds[size_t(std::min(i, seq - 1))]; };
  std::vector<int> count(size_t(seq) * seq, 0);
  for (int q0 = 0; q0 < seq; q0 += br)
    for (int row0 = q0; row0 < q0 + br; row0 += 16) {
      const int n_kt = kmath::attn_key_tiles(q0, br, bc, seq);
      const int kt_begin = kmath::attn_first_key_tile(ds[size_t(q0)], bc);
      const int doc_lo = at(row0), doc_hi = at(row0 + 15);
      for (int i = row0; i < std::min(row0 + 16, seq); ++i)  // skipped tiles: nothing seen
        for (int j = 0; j < kt_begin * bc; ++j) ASSERT_FALSE(doc_visible(ds, i, j));
      for (int kt = kt_begin; kt < n_kt; ++kt) {
        const int k0 = kt * bc;
        if (!kmath::attn_sees(row0 + 15, k0) || !kmath::attn_doc_sees_keys(k0, bc, doc_lo)) {
          for (int i = row0; i < row0 + 16; ++i)
            for (int j = k0; j < k0 + bc; ++j) ASSERT_FALSE(doc_visible(ds, i, j));
          continue;
        }
        const bool masked = kmath::attn_needs_mask(row0, k0 + bc - 1) ||
                            kmath::attn_doc_masks_keys(k0, doc_hi);
        for (int i = row0; i < std::min(row0 + 16, seq); ++i)
          for (int j = k0; j < k0 + bc; ++j) {
            if (masked && (j > i || j < ds[size_t(i)])) continue;  // the element mask
            ASSERT_TRUE(doc_visible(ds, i, j)) << "unmasked hidden pair i " << i << " j " << j;
            ++count[size_t(i) * seq + j];
          }
      }
    }
  for (int i = 0; i < seq; ++i)
    for (int j = 0; j < seq; ++j)
      ASSERT_EQ(count[size_t(i) * seq + j], doc_visible(ds, i, j) ? 1 : 0) << i << "," << j;
}

// dK/dV with doc_start: query tiles from attn_first_query_tile to the tile holding
// attn_doc_end of the block's last key; a warp computes a tile iff attn_sees and
// attn_doc_seen_by_rows (its last key's document end end_hi), masks iff the causal rule
// or attn_doc_masks_rows (first key's end_lo); element mask i >= attn_doc_end(j).
void check_key_major_docs(int br, int bc, const std::vector<int32_t>& ds) {
  const int seq = int(ds.size());
  auto end_of = [&](int j) { return kmath::attn_doc_end(ds.data(), seq, std::min(j, seq - 1)); };
  std::vector<int> count(size_t(seq) * seq, 0);
  for (int k0 = 0; k0 < seq; k0 += bc)
    for (int key0 = k0; key0 < k0 + bc; key0 += 16) {
      const int first = kmath::attn_first_query_tile(k0, br);
      const int q_end = end_of(k0 + bc - 1), end_lo = end_of(key0), end_hi = end_of(key0 + 15);
      for (int j = key0; j < std::min(key0 + 16, seq); ++j)  // rows outside the loop
        for (int i = 0; i < seq; ++i)
          if (i < first * br || i >= (q_end + br - 1) / br * br) {
            ASSERT_FALSE(doc_visible(ds, i, j));
          }
      for (int q0 = first * br; q0 < q_end; q0 += br) {
        if (!kmath::attn_sees(q0 + br - 1, key0) || !kmath::attn_doc_seen_by_rows(q0, end_hi)) {
          for (int i = q0; i < q0 + br; ++i)
            for (int j = key0; j < key0 + 16; ++j) ASSERT_FALSE(doc_visible(ds, i, j));
          continue;
        }
        const bool masked = kmath::attn_needs_mask(q0, key0 + 15) || q0 + br > seq ||
                            kmath::attn_doc_masks_rows(q0, br, end_lo);
        for (int i = q0; i < q0 + br; ++i)
          for (int j = key0; j < std::min(key0 + 16, seq); ++j) {
            if (masked && (j > i || i >= seq || i >= end_of(j))) continue;
            ASSERT_TRUE(doc_visible(ds, i, j)) << "unmasked hidden pair i " << i << " j " << j;
            ++count[size_t(i) * seq + j];
          }
      }
    }
  for (int i = 0; i < seq; ++i)
    for (int j = 0; j < seq; ++j)
      ASSERT_EQ(count[size_t(i) * seq + j], doc_visible(ds, i, j) ? 1 : 0) << i << "," << j;
}

TEST(AttentionTiles, DocumentEndIsTheFirstRowOfALaterDocument) {
  using L = std::vector<int>;
  for (const L& lengths : {L{1}, L{3, 1, 7}, L{64, 1, 200}}) {
    const std::vector<int32_t> ds = doc_layout(150, lengths);
    EXPECT_TRUE(kmath::attn_doc_start_valid(ds.data(), int64_t(ds.size())));
    for (int j = 0; j < 150; ++j) {
      int end = j + 1;
      while (end < 150 && ds[size_t(end)] <= j) ++end;
      ASSERT_EQ(kmath::attn_doc_end(ds.data(), 150, j), end) << j;
    }
  }
  const std::vector<int32_t> bad = {0, 0, 2, 1};
  EXPECT_FALSE(kmath::attn_doc_start_valid(bad.data(), 4));
  const std::vector<int32_t> bad_first = {1, 1};
  EXPECT_FALSE(kmath::attn_doc_start_valid(bad_first.data(), 2));
}

TEST(AttentionTiles, DocumentScheduleCoversEveryVisiblePairOnce) {
  for (int seq : {1, 17, 64, 129, 300})
    for (const std::vector<int>& lengths :
         {std::vector<int>{1}, std::vector<int>{1, 63, 2, 130, 40}, std::vector<int>{128, 64, 1},
          std::vector<int>{17, 5, 29}, std::vector<int>{1000},
          // document boundaries one row before or after a tile edge, far from the diagonal
          std::vector<int>{127, 1, 95}, std::vector<int>{65, 33, 31}}) {
      SCOPED_TRACE(testing::Message() << "seq " << seq << ", first document " << lengths[0]);
      const std::vector<int32_t> ds = doc_layout(seq, lengths);
      check_query_major_docs(128, 64, ds);
      check_key_major_docs(64, 128, ds);
      check_query_major_docs(128, 32, ds);  // dQ's 32-key tiles
      check_key_major_docs(32, 128, ds);    // dK/dV's 32-row tiles
    }
}

}  // namespace
