// The NF4 kernels' index math (kernels/nf4_layout.h), checked on the CPU so that it is covered
// where no GPU is available: the matmul launch plan, the mma.sync fragment map (by emulating
// the warp's tensor-core steps with the PTX fragment layout and comparing with a plain matmul),
// the shared-memory x tile (injective, 16-byte aligned, free of bank conflicts), the dequantize
// tile (emulated lane by lane, bitwise against the CPU dequantize), and the test that lets the
// offset kernel use a parallel sum (it must agree with the CPU's sequential double sum).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "engine/quant/nf4.h"
#include "engine/tensor.h"
#include "kernels/math/bf16.h"
#include "kernels/math/nf4.h"
#include "kernels/nf4_layout.h"

namespace {

namespace nf4 = kernels::nf4;
namespace quant = engine::quant;
using engine::Tensor;

std::vector<float> code_table() {
  std::vector<float> lut(16);
  for (int i = 0; i < 16; ++i) lut[i] = kmath::nf4_code(i);
  return lut;
}

// ---- the launch plan -------------------------------------------------------------------

TEST(Nf4Layout, MatmulPlanPicksTheTensorCorePathOnlyForAlignedMultiplesOf128) {
  EXPECT_TRUE(nf4::matmul_plan(16, 8192, 8192, true).tensor_cores);
  EXPECT_FALSE(nf4::matmul_plan(16, 8192, 8192, false).tensor_cores);
  EXPECT_FALSE(nf4::matmul_plan(16, 100, 64, true).tensor_cores);
  EXPECT_FALSE(nf4::matmul_plan(16, 100, 200, true).tensor_cores);
  EXPECT_FALSE(nf4::matmul_plan(16, 100, 0, true).tensor_cores);
  // The workspace follows from the shape alone (callers size it before knowing alignment).
  EXPECT_EQ(nf4::matmul_plan(16, 8192, 8192, false).workspace_bytes,
            nf4::matmul_plan(16, 8192, 8192, true).workspace_bytes);
  const nf4::MatmulPlan generic = nf4::matmul_plan(7, 45, 77, true);
  EXPECT_EQ(generic.splits, 1);
  EXPECT_EQ(generic.rows_per_cta, nf4::kGenericWarps);
  EXPECT_EQ(generic.n_blocks, (45 + nf4::kGenericWarps - 1) / nf4::kGenericWarps);
  EXPECT_EQ(generic.workspace_bytes, 0u);
}

TEST(Nf4Layout, MatmulPlanTilesCoverTheOutputAndSplitsPartitionK) {
  for (int64_t m : {1, 7, 16, 17, 33, 48, 64})
    for (int64_t n : {1, 8, 37, 128, 1024, 8192, 28672})
      for (int64_t k : {128, 384, 1024, 8192, 28672}) {
        SCOPED_TRACE(testing::Message() << "m " << m << " n " << n << " k " << k);
        const nf4::MatmulPlan p = nf4::matmul_plan(m, n, k, true);
        ASSERT_TRUE(p.tensor_cores);
        EXPECT_EQ(p.m_tiles, (m + 15) / 16);
        EXPECT_LE(p.m_tiles * p.n_tiles_per_warp * 4, 32) << "accumulator registers";
        EXPECT_EQ(p.rows_per_cta, int64_t{nf4::kMatmulWarps} * nf4::kMmaN * p.n_tiles_per_warp);
        EXPECT_GE(p.n_blocks * p.rows_per_cta, n);
        EXPECT_LT((p.n_blocks - 1) * p.rows_per_cta, n);
        EXPECT_EQ(p.chunks, k / 128);
        ASSERT_GE(p.splits, 1);
        EXPECT_LE(p.splits, nf4::kMaxSplits);
        EXPECT_TRUE(p.splits == 1 || p.chunks / p.splits >= nf4::kMinChunksPerSplit);
        EXPECT_EQ(nf4::chunk_begin(p.chunks, p.splits, 0), 0);
        EXPECT_EQ(nf4::chunk_begin(p.chunks, p.splits, p.splits), p.chunks);
        for (int s = 0; s < p.splits; ++s)
          EXPECT_GT(nf4::chunk_begin(p.chunks, p.splits, s + 1), nf4::chunk_begin(p.chunks, p.splits, s));
        EXPECT_EQ(p.workspace_bytes,
                  p.splits > 1 ? static_cast<size_t>(p.splits * m * n) * sizeof(float) : 0u);
      }
}

TEST(Nf4Layout, MatmulPlanGivesTheLlama70bShapesEnoughCtas) {
  // [out, in] of q/o (8192 x 8192), gate/up (28672 x 8192), down (8192 x 28672): at least
  // three CTAs per SM of a 132-SM H100 so that the W loads of several CTAs overlap.
  for (int64_t m : {1, 16, 64})
    for (auto [n, k] : {std::pair<int64_t, int64_t>{8192, 8192}, {28672, 8192}, {8192, 28672}}) {
      const nf4::MatmulPlan p = nf4::matmul_plan(m, n, k, true);
      EXPECT_GE(p.n_blocks * p.splits, 3 * 132) << m << " " << n << " " << k;
    }
}

// ---- the fragment map ------------------------------------------------------------------

TEST(Nf4Layout, MmaKMapCoversEachChunkOnceAndMatchesTheWBytes) {
  std::set<int> all;
  for (int c = 0; c < 8; ++c) {
    std::set<int> step;
    for (int t = 0; t < 4; ++t)
      for (int pair = 0; pair < 2; ++pair)
        for (int e = 0; e < 2; ++e) {
          const int k = nf4::mma_k(t, c, pair, e);
          ASSERT_GE(k, 32 * t);
          ASSERT_LT(k, 32 * t + 32) << "a lane's k lie in its own 16 bytes";
          // b_fragment reads byte 2c + pair of the lane's 16; value 2j is its high nibble.
          EXPECT_EQ((k - 32 * t) / 2, 2 * c + pair);
          EXPECT_EQ(k % 2, e);
          step.insert(k);
          all.insert(k);
        }
    EXPECT_EQ(step.size(), 16u) << "16 distinct k per mma step";
  }
  EXPECT_EQ(all.size(), 128u);
  EXPECT_EQ(*all.begin(), 0);
  EXPECT_EQ(*all.rbegin(), 127);
}

TEST(Nf4Layout, XTileIsInjectiveAlignedAndBankConflictFree) {
  std::set<int> seen;
  for (int r = 0; r < nf4::kMaxSmallM; ++r)
    for (int k = 0; k < nf4::kChunk; ++k) {
      const int off = nf4::xs_offset(r, k);
      ASSERT_TRUE(seen.insert(off).second) << r << " " << k;
      ASSERT_LT(off, nf4::kMaxSmallM * nf4::kXsRowStride);
      if (k % 8 == 0) {
        EXPECT_EQ(off * 2 % 16, 0) << "cp.async and the 16-byte reads need aligned segments";
        EXPECT_EQ(nf4::xs_offset(r, k + 7), off + 7) << "a segment is contiguous";
      }
    }
  // The kernel's reads: lane (g, t) loads 16 bytes at (row mt*16 + g (+8), k 32 t + 8 cp).
  // A 16-byte shared access is served 8 lanes at a time; those 8 must hit 8 different 16-byte
  // bank groups (byte address / 16 mod 8) to need one pass.
  for (int mt = 0; mt < 4; ++mt)
    for (int upper = 0; upper < 2; ++upper)
      for (int cp = 0; cp < 4; ++cp)
        for (int phase = 0; phase < 4; ++phase) {
          std::set<int> groups;
          for (int lane = 8 * phase; lane < 8 * phase + 8; ++lane) {
            const int g = lane >> 2, t = lane & 3;
            const int byte = 2 * nf4::xs_offset(mt * 16 + g + 8 * upper, 32 * t + 8 * cp);
            groups.insert(byte / 16 % 8);
          }
          EXPECT_EQ(groups.size(), 8u) << "mt " << mt << " cp " << cp << " phase " << phase;
        }
}

float bf16_lo(uint32_t v) { return kmath::bf16_bits_to_float(static_cast<uint16_t>(v & 0xffffu)); }
float bf16_hi(uint32_t v) { return kmath::bf16_bits_to_float(static_cast<uint16_t>(v >> 16)); }

// The tensor-core kernel, emulated warp by warp: the same x staging (xs_offset), the same
// lane loads (lane_w_byte, lane_w_block), the same fragments (a_fragment, b_fragment), the
// mma as the PTX ISA lays out m16n8k16 fragments, the same epilogue map (d_row, d_col) and
// split ranges. Sums in double: this checks which values meet, not fp32 rounding.
std::vector<double> emulate_tensor_core_matmul(const std::vector<uint16_t>& x, int64_t m,
                                               const std::vector<uint8_t>& packed,
                                               const std::vector<float>& scales, int64_t n,
                                               int64_t k, int splits) {
  const nf4::MatmulPlan p = nf4::matmul_plan(m, n, k, true);
  EXPECT_TRUE(p.tensor_cores);
  const int MT = p.m_tiles, NT = p.n_tiles_per_warp;
  const std::vector<float> lut = code_table();
  std::vector<double> y(static_cast<size_t>(m * n), 0.0);
  std::vector<uint16_t> xs(static_cast<size_t>(MT * 16 * nf4::kXsRowStride));
  for (int64_t cta = 0; cta < p.n_blocks; ++cta)
    for (int split = 0; split < splits; ++split)
      for (int warp = 0; warp < nf4::kMatmulWarps; ++warp) {
        const int64_t warp_row0 = cta * p.rows_per_cta + int64_t{warp} * 8 * NT;
        // acc[mt][nt][lane][r]
        std::vector<double> acc(static_cast<size_t>(MT * NT * 32 * 4), 0.0);
        auto at = [&](int mt, int nt, int lane, int r) -> double& {
          return acc[static_cast<size_t>(((mt * NT + nt) * 32 + lane) * 4 + r)];
        };
        for (int64_t kc = nf4::chunk_begin(p.chunks, splits, split);
             kc < nf4::chunk_begin(p.chunks, splits, split + 1); ++kc) {
          std::fill(xs.begin(), xs.end(), uint16_t{0});
          for (int r = 0; r < m; ++r)
            for (int seg = 0; seg < 16; ++seg)
              std::memcpy(&xs[static_cast<size_t>(nf4::xs_offset(r, 8 * seg))],
                          &x[static_cast<size_t>(r * k + kc * 128 + 8 * seg)], 16);
          for (int c = 0; c < 8; ++c) {
            const int cp = c / 2;
            for (int mt = 0; mt < MT; ++mt)
              for (int nt = 0; nt < NT; ++nt) {
                double A[16][16], B[16][8];
                int a_hits[16][16] = {}, b_hits[16][8] = {};
                for (int lane = 0; lane < 32; ++lane) {
                  const int g = lane >> 2, t = lane & 3;
                  uint32_t lo[4], hi[4], a[4], words[4], b[2];
                  std::memcpy(lo, &xs[static_cast<size_t>(nf4::xs_offset(mt * 16 + g, 32 * t + 8 * cp))], 16);
                  std::memcpy(hi, &xs[static_cast<size_t>(nf4::xs_offset(mt * 16 + g + 8, 32 * t + 8 * cp))], 16);
                  nf4::a_fragment(lo, hi, c, a);
                  const int64_t row = std::min(warp_row0 + 8 * nt + g, n - 1);
                  std::memcpy(words, &packed[static_cast<size_t>(nf4::lane_w_byte(row, kc, t, k))], 16);
                  const float scale = scales[static_cast<size_t>(nf4::lane_w_block(row, kc, t, k))];
                  nf4::b_fragment(words, c, scale, lut.data(), b);
                  for (int r = 0; r < 4; ++r) {  // A: rows g + 8 (r & 1), k pair t + 4 (r >> 1)
                    const int ar = g + 8 * (r & 1), ak = 2 * (t + 4 * (r >> 1));
                    A[ar][ak] = bf16_lo(a[r]);
                    A[ar][ak + 1] = bf16_hi(a[r]);
                    ++a_hits[ar][ak];
                    ++a_hits[ar][ak + 1];
                  }
                  for (int r = 0; r < 2; ++r) {  // B: column g, k pair t + 4 r
                    const int bk = 2 * (t + 4 * r);
                    B[bk][g] = bf16_lo(b[r]);
                    B[bk + 1][g] = bf16_hi(b[r]);
                    ++b_hits[bk][g];
                    ++b_hits[bk + 1][g];
                  }
                }
                for (int i = 0; i < 16; ++i)
                  for (int j = 0; j < 16; ++j) EXPECT_EQ(a_hits[i][j], 1);
                for (int i = 0; i < 16; ++i)
                  for (int j = 0; j < 8; ++j) EXPECT_EQ(b_hits[i][j], 1);
                for (int lane = 0; lane < 32; ++lane)
                  for (int r = 0; r < 4; ++r) {  // D: row g + 8 (r >> 1), column 2 t + (r & 1)
                    const int dr = (lane >> 2) + 8 * (r >> 1), dc = 2 * (lane & 3) + (r & 1);
                    double sum = 0;
                    for (int kk = 0; kk < 16; ++kk) sum += A[dr][kk] * B[kk][dc];
                    at(mt, nt, lane, r) += sum;
                  }
              }
          }
        }
        for (int mt = 0; mt < MT; ++mt)
          for (int nt = 0; nt < NT; ++nt)
            for (int lane = 0; lane < 32; ++lane)
              for (int r = 0; r < 4; ++r) {
                const int row = nf4::d_row(mt, lane >> 2, r);
                const int64_t col = warp_row0 + nf4::d_col(nt, lane & 3, r);
                if (row < m && col < n) y[static_cast<size_t>(row * n + col)] += at(mt, nt, lane, r);
              }
      }
  return y;
}

TEST(Nf4Layout, EmulatedTensorCoreMatmulEqualsThePlainProduct) {
  std::mt19937 gen(21);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  struct Shape3 {
    int64_t m, n, k;
  };
  for (const Shape3 s : {Shape3{21, 19, 384}, Shape3{1, 5, 128}, Shape3{64, 40, 256},
                         Shape3{33, 70, 512}}) {
    SCOPED_TRACE(testing::Message() << "m " << s.m << " n " << s.n << " k " << s.k);
    std::vector<float> wv(static_cast<size_t>(s.n * s.k));
    for (size_t i = 0; i < wv.size(); ++i) wv[i] = normal(gen) * (1.0f + static_cast<float>(i / 64 % 5));
    const quant::Nf4Weight w = quant::quantize_nf4(Tensor::from_floats(wv, {s.n, s.k}));
    const std::vector<float> scales = quant::dequantized_absmax(w).to_floats();
    const uint8_t* pk = w.packed.data<uint8_t>();
    const std::vector<uint8_t> packed(pk, pk + w.packed.numel());
    const std::vector<float> deq = quant::dequantize_nf4(w).to_floats();
    std::vector<uint16_t> x(static_cast<size_t>(s.m * s.k));
    for (auto& v : x) v = kmath::float_to_bf16_bits(normal(gen));
    const nf4::MatmulPlan p = nf4::matmul_plan(s.m, s.n, s.k, true);
    for (int splits : {1, static_cast<int>(p.chunks)}) {
      const std::vector<double> y = emulate_tensor_core_matmul(x, s.m, packed, scales, s.n, s.k, splits);
      for (int64_t i = 0; i < s.m; ++i)
        for (int64_t j = 0; j < s.n; ++j) {
          double ref = 0, mag = 0;
          for (int64_t kk = 0; kk < s.k; ++kk) {
            const double xv = kmath::bf16_bits_to_float(x[static_cast<size_t>(i * s.k + kk)]);
            const double wb = kmath::round_to_bf16(deq[static_cast<size_t>(j * s.k + kk)]);
            ref += xv * wb;
            mag += std::fabs(xv * wb);
          }
          // Products of two bf16 are exact in double; only the order of the additions differs.
          ASSERT_NEAR(y[static_cast<size_t>(i * s.n + j)], ref, 1e-13 * mag + 1e-300)
              << "y[" << i << ", " << j << "] splits " << splits;
        }
    }
  }
}

// ---- dequantize ------------------------------------------------------------------------

TEST(Nf4Layout, EmulatedDequantizeTileEqualsTheCpuBitwise) {
  std::mt19937 gen(5);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const int64_t n = 3 * nf4::kDequantTileValues;
  std::vector<float> wv(static_cast<size_t>(n));
  for (size_t i = 0; i < wv.size(); ++i) wv[i] = normal(gen) * static_cast<float>(1 + i / 64 % 7);
  const quant::Nf4Weight w = quant::quantize_nf4(Tensor::from_floats(wv, {3, n / 3}));
  const std::vector<float> scales = quant::dequantized_absmax(w).to_floats();
  const std::vector<float> ref = quant::dequantize_nf4(w).to_floats();
  const uint8_t* packed = w.packed.data<uint8_t>();
  const std::vector<float> lut = code_table();
  for (int per_store : {8, 4}) {  // bf16, f32
    SCOPED_TRACE(per_store == 8 ? "bf16" : "f32");
    for (int64_t tile = 0; tile < n / nf4::kDequantTileValues; ++tile) {
      const int64_t first_block = tile * (nf4::kDequantTileValues / 64);
      for (int j = 0; j < nf4::kDequantTileValues / per_store / 32; ++j)
        for (int lane = 0; lane < 32; ++lane) {
          const int c = 32 * j + lane;
          const int src = nf4::dequant_scale_lane(c, per_store);
          ASSERT_LT(src, 16) << "the scale comes from a lane that decoded block (lane & 15)";
          const float scale = scales[static_cast<size_t>(first_block + src)];
          const int64_t first = tile * nf4::kDequantTileValues + int64_t{c} * per_store;
          ASSERT_EQ(first / 64, first_block + src) << "chunk " << c;
          const uint8_t* bytes = packed + tile * nf4::kDequantTileBytes;
          if (per_store == 8) {
            uint32_t word, out[4];
            std::memcpy(&word, bytes + 4 * c, 4);
            nf4::decode_word_bf16(word, scale, lut.data(), out);
            uint16_t got[8];
            std::memcpy(got, out, 16);
            for (int i = 0; i < 8; ++i)
              ASSERT_EQ(got[i], kmath::float_to_bf16_bits(ref[static_cast<size_t>(first + i)])) << first + i;
          } else {
            uint16_t two;
            std::memcpy(&two, bytes + 2 * c, 2);
            float out[4];
            nf4::decode_half_f32(two, scale, lut.data(), out);
            for (int i = 0; i < 4; ++i)
              ASSERT_EQ(kmath::float_to_bits(out[i]), kmath::float_to_bits(ref[static_cast<size_t>(first + i)]))
                  << first + i;
          }
        }
    }
  }
}

// ---- the double-quantization offset ----------------------------------------------------

double sequential_sum(const std::vector<float>& a) {
  double s = 0;
  for (float v : a) s += v;
  return s;
}

// The offset kernel's parallel order: 1024 strided thread sums, a shfl_down tree per warp,
// then the 32 warp sums in order. Returns the sum and the least ulp key of the non-zeros.
double kernel_order_sum(const std::vector<float>& a, int* min_key) {
  std::vector<double> lanes(1024, 0.0);
  *min_key = 256;
  for (size_t i = 0; i < a.size(); ++i) {
    lanes[i % 1024] += a[i];
    if (a[i] != 0.0f) *min_key = std::min(*min_key, nf4::ulp_exponent_key(kmath::float_to_bits(a[i])));
  }
  double total = 0;
  for (int w = 0; w < 32; ++w) {
    double v[32];
    for (int l = 0; l < 32; ++l) v[l] = lanes[static_cast<size_t>(32 * w + l)];
    for (int off = 16; off > 0; off >>= 1)
      for (int l = 0; l + off < 32; ++l) v[l] += v[l + off];  // lane l reads lane l + off
    total += v[0];
  }
  return total;
}

TEST(Nf4Layout, UlpKeyIsTheBiasedExponentWithSubnormalsAtOne) {
  EXPECT_EQ(nf4::ulp_exponent_key(kmath::float_to_bits(1.0f)), 127);
  EXPECT_EQ(nf4::ulp_exponent_key(kmath::float_to_bits(0.75f)), 126);
  EXPECT_EQ(nf4::ulp_exponent_key(kmath::float_to_bits(1e-40f)), 1);
  EXPECT_EQ(nf4::ulp_exponent_key(kmath::float_to_bits(std::ldexp(1.0f, -126))), 1);
}

TEST(Nf4Layout, ExactOffsetSumsAgreeWithTheSequentialSumInAnyOrder) {
  std::mt19937 gen(9);
  int exact_cases = 0;
  for (int trial = 0; trial < 40; ++trial) {
    // Absmax-like values: a log-uniform spread of 2^-spread around 0.05, sometimes zeros.
    const int spread = trial % 20;
    std::uniform_real_distribution<float> e(-static_cast<float>(spread), 0.0f);
    std::vector<float> a(static_cast<size_t>(1000 + 7919 * trial));
    for (auto& v : a) v = 0.05f * std::exp2(e(gen)) * (1.0f + e(gen) / 64.0f);
    if (trial % 3 == 0) a[a.size() / 2] = 0.0f;
    int key = 0;
    const double par = kernel_order_sum(a, &key);
    const double seq = sequential_sum(a);
    std::vector<float> shuffled = a;
    std::shuffle(shuffled.begin(), shuffled.end(), gen);
    if (nf4::offset_sum_is_exact(par, key)) {
      ++exact_cases;
      EXPECT_EQ(par, seq) << "trial " << trial;
      EXPECT_EQ(sequential_sum(shuffled), seq) << "trial " << trial;
    }
  }
  EXPECT_GE(exact_cases, 20) << "realistic spreads should take the parallel path";
}

TEST(Nf4Layout, InexactOffsetSumsAreRejected) {
  // 1 followed by 2047 values of 2^-53: in index order every addition is a tie that rounds
  // back to 1; the kernel's order first adds the small values together and lands above 1.
  std::vector<float> a(2048, std::ldexp(1.0f, -53));
  a[0] = 1.0f;
  int key = 0;
  const double par = kernel_order_sum(a, &key);
  EXPECT_EQ(sequential_sum(a), 1.0);
  EXPECT_NE(par, 1.0);
  EXPECT_FALSE(nf4::offset_sum_is_exact(par, key));
  // Edge cases: all zeros are exact; infinities and NaN never are.
  EXPECT_TRUE(nf4::offset_sum_is_exact(0.0, 256));
  EXPECT_FALSE(nf4::offset_sum_is_exact(INFINITY, 200));
  EXPECT_FALSE(nf4::offset_sum_is_exact(NAN, 100));
  // The bound is 2^52 ulps of the smallest value: 2^52 * 2^-23 for values >= 1.
  EXPECT_TRUE(nf4::offset_sum_is_exact(std::ldexp(1.0, 29) - 1, 127));
  EXPECT_FALSE(nf4::offset_sum_is_exact(std::ldexp(1.0, 29), 127));
}

}  // namespace
