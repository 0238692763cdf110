// The fused lm_head cross-entropy on the CPU: it must equal the unfused
// cross_entropy(matmul(h, W^T)) bitwise (engine/cpu/lm_head_loss.cpp does the same
// arithmetic in the same order, chunked or not), plus the shared math the CUDA kernels
// use (kernels/math/cross_entropy.h) and the tiling plan's memory bound. Finite-
// difference gradient checks of the op live in the op harness (test_op_gradients).
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "kernels/cross_entropy_tiling.h"
#include "kernels/math/cross_entropy.h"

namespace {

using engine::Shape;
using engine::Tensor;

constexpr double kU = FLT_EPSILON / 2;  // fp32 unit roundoff

Tensor targets_with_ignores(int64_t n, int32_t v, uint64_t seed) {
  engine::Generator gen(seed);
  std::vector<float> u = engine::uniform({n}, 0.0f, 1.0f, gen).to_floats();
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i)
    t[i] = u[i] < 0.25f ? -100 : static_cast<int32_t>((u[i] - 0.25f) / 0.75f * v) % v;
  t[0] = v - 1;  // at least one counted row, one at the last vocabulary entry
  return Tensor::from_ints(t, {n});
}

struct Grads {
  float loss;
  std::vector<float> dh, dw;
};

Grads run(bool fused, const Tensor& h0, const Tensor& w0, const Tensor& targets, int64_t chunk,
          bool weight_grad = true) {
  Tensor h = h0.clone().set_requires_grad(true);
  Tensor w = w0.clone().set_requires_grad(weight_grad);
  Tensor loss = fused ? engine::ops::lm_head_cross_entropy(h, w, targets, -100, chunk)
                      : engine::ops::cross_entropy(engine::ops::matmul(h, w, false, true), targets);
  engine::backward(engine::ops::scale(loss, 1.75f));  // a non-unit upstream gradient
  Grads g{loss.item(), h.grad().to_floats(), {}};
  if (weight_grad) g.dw = w.grad().to_floats();
  else EXPECT_FALSE(w.grad().defined());
  return g;
}

TEST(LmHeadCrossEntropy, EqualsUnfusedBitwiseForEveryChunking) {
  engine::Generator gen(7);
  const int64_t n = 13, hd = 6, v = 19;
  Tensor h = engine::uniform({n, hd}, -2.0f, 2.0f, gen);
  Tensor w = engine::uniform({v, hd}, -2.0f, 2.0f, gen);
  Tensor t = targets_with_ignores(n, v, 8);
  const Grads ref = run(false, h, w, t, 0);
  for (int64_t chunk : {0, 1, 4, 12, 13, 100}) {
    SCOPED_TRACE("chunk_rows " + std::to_string(chunk));
    const Grads got = run(true, h, w, t, chunk);
    EXPECT_EQ(got.loss, ref.loss);
    EXPECT_EQ(got.dh, ref.dh);
    EXPECT_EQ(got.dw, ref.dw);
  }
}

TEST(LmHeadCrossEntropy, WeightGradientOnlyWhenRequired) {
  engine::Generator gen(9);
  Tensor h = engine::uniform({5, 4}, -1.0f, 1.0f, gen), w = engine::uniform({7, 4}, -1.0f, 1.0f, gen);
  Tensor t = targets_with_ignores(5, 7, 10);
  const Grads both = run(true, h, w, t, 2, true), dh_only = run(true, h, w, t, 2, false);
  EXPECT_EQ(both.dh, dh_only.dh);
}

TEST(LmHeadCrossEntropy, NoCountedRowGivesZeroLossAndGradients) {
  engine::Generator gen(11);
  Tensor h = engine::uniform({3, 4}, -1.0f, 1.0f, gen).set_requires_grad(true);
  Tensor w = engine::uniform({5, 4}, -1.0f, 1.0f, gen).set_requires_grad(true);
  Tensor loss = engine::ops::lm_head_cross_entropy(h, w, Tensor::from_ints({-100, -100, -100}, {3}));
  EXPECT_EQ(loss.item(), 0.0f);
  engine::backward(loss);
  for (float x : h.grad().to_floats()) EXPECT_EQ(x, 0.0f);
  for (float x : w.grad().to_floats()) EXPECT_EQ(x, 0.0f);
}

TEST(LmHeadCrossEntropy, RejectsTargetsOutsideTheVocabulary) {
  Tensor h = Tensor::zeros({2, 3}), w = Tensor::zeros({4, 3});
  EXPECT_THROW(engine::ops::lm_head_cross_entropy(h, w, Tensor::from_ints({0, 4}, {2})),
               engine::Error);
  EXPECT_THROW(engine::ops::lm_head_cross_entropy(h, w, Tensor::from_ints({-1, 0}, {2})),
               engine::Error);
  EXPECT_THROW(engine::ops::lm_head_cross_entropy(h, Tensor::zeros({4, 2}), Tensor::from_ints({0, 1}, {2})),
               engine::Error);
}

// ---- shared math -------------------------------------------------------------------

double lse_double(const std::vector<float>& z, size_t begin, size_t end) {
  double m = -INFINITY, s = 0;
  for (size_t j = begin; j < end; ++j) m = std::max(m, double(z[j]));
  for (size_t j = begin; j < end; ++j) s += std::exp(double(z[j]) - m);
  return m + std::log(s);
}

// fp32 running statistics against a double lse. Each of the V steps rounds s once
// (relative u) and takes one exp (a few ulp) and may rescale (one more exp and one
// multiply): s is off by at most (4 V + 4) u relatively, which moves lse = m + log s by
// the same amount absolutely; the final m + log s rounds once more (u |lse|).
double stats_tolerance(size_t v, double lse) { return (4.0 * double(v) + 4.0) * kU + kU * std::fabs(lse); }

TEST(CrossEntropyMath, RunningStatisticsMatchDoubleLogSumExp) {
  engine::Generator gen(3);
  for (int64_t v : {1, 2, 17, 1000}) {
    std::vector<float> z = engine::uniform({v}, -30.0f, 30.0f, gen).to_floats();
    const double ref = lse_double(z, 0, z.size());
    kmath::CeStats one = kmath::ce_stats_empty();
    for (float x : z) one = kmath::ce_stats_add(one, x);
    EXPECT_NEAR(kmath::ce_stats_lse(one), ref, stats_tolerance(z.size(), ref)) << "V " << v;
    // Any cut into blocks, merged in order (as across vocab blocks and threads).
    for (size_t block : {size_t(1), size_t(3), size_t(16)}) {
      kmath::CeStats merged = kmath::ce_stats_empty();
      for (size_t b = 0; b < z.size(); b += block) {
        kmath::CeStats part = kmath::ce_stats_empty();
        for (size_t j = b; j < std::min(z.size(), b + block); ++j) part = kmath::ce_stats_add(part, z[j]);
        merged = kmath::ce_stats_merge(merged, part);
      }
      EXPECT_NEAR(kmath::ce_stats_lse(merged), ref, stats_tolerance(z.size(), ref))
          << "V " << v << " block " << block;
    }
    EXPECT_NEAR(kmath::ce_row_lse<double>(z.data(), v), ref, 4 * double(v) * DBL_EPSILON * (1 + std::fabs(ref)));
  }
}

TEST(CrossEntropyMath, EmptyAndInfiniteStatesAreIdentities) {
  const kmath::CeStats e = kmath::ce_stats_empty();
  kmath::CeStats a = kmath::ce_stats_add(e, 2.0f);
  EXPECT_EQ(a.m, 2.0f);
  EXPECT_EQ(a.s, 1.0f);
  kmath::CeStats b = kmath::ce_stats_add(a, -INFINITY);
  EXPECT_EQ(b.m, a.m);
  EXPECT_EQ(b.s, a.s);
  EXPECT_EQ(kmath::ce_stats_merge(e, a).s, a.s);
  EXPECT_EQ(kmath::ce_stats_merge(a, e).m, a.m);
  const kmath::CeStats ee = kmath::ce_stats_merge(e, e);
  EXPECT_EQ(ee.m, -INFINITY);
  EXPECT_EQ(ee.s, 0.0f);
  EXPECT_TRUE(std::isnan(kmath::ce_stats_add(a, NAN).s));  // NaN logits are not hidden
}

TEST(CrossEntropyMath, DlogitIsSoftmaxMinusOnehotTimesCoefficient) {
  const double z = 0.3, lse = 1.7, coef = 0.25;
  EXPECT_DOUBLE_EQ(kmath::ce_dlogit<double>(z, lse, coef, false), coef * std::exp(z - lse));
  EXPECT_DOUBLE_EQ(kmath::ce_dlogit<double>(z, lse, coef, true), coef * (std::exp(z - lse) - 1));
  EXPECT_NEAR(kmath::ce_dlogit<float>(0.3f, 1.7f, 0.25f, true), coef * (std::exp(z - lse) - 1), 4 * kU);
}

TEST(CrossEntropyMath, Bf16SplitCarries16Bits) {
  engine::Generator gen(5);
  std::vector<float> xs = engine::uniform({4096}, -1.0f, 1.0f, gen).to_floats();
  for (size_t i = 0; i < xs.size(); ++i) xs[i] *= std::ldexp(1.0f, static_cast<int>(i % 60) - 40);
  xs.push_back(0.0f);
  for (float x : xs) {
    uint16_t hi = 0, lo = 0;
    kmath::ce_split_bf16(x, &hi, &lo);
    EXPECT_EQ(hi, kmath::float_to_bf16_bits(x));
    const double sum = double(kmath::bf16_bits_to_float(hi)) + kmath::bf16_bits_to_float(lo);
    EXPECT_LE(std::fabs(sum - x), std::ldexp(std::fabs(double(x)), -16)) << x;
  }
}

// ---- tiling plan ----------------------------------------------------------------------

TEST(LmHeadTiling, ScratchStaysWithinTheBudget) {
  struct Case { int64_t n, v, h; };
  for (Case c : {Case{4096, 128256, 8192}, Case{16384, 128256, 8192}, Case{2048, 128256, 4096},
                 Case{300, 1000, 64}, Case{1000, 50, 16}, Case{7, 100000, 32}}) {
    for (int64_t bytes : {2, 4})
      for (int mode = 0; mode < 3; ++mode) {
        const bool split = mode > 0, acc = mode == 2;
        const auto t = kernels::plan_lm_head_tiling(c.n, c.v, c.h, bytes, split, acc, 0);
        SCOPED_TRACE(testing::Message() << "n " << c.n << " v " << c.v << " h " << c.h << " bytes "
                                        << bytes << " mode " << mode << ": rows " << t.rows
                                        << " block " << t.vocab_block);
        EXPECT_GE(t.rows, 1);
        EXPECT_LE(t.rows, c.n);
        EXPECT_GE(t.vocab_block, std::min<int64_t>(c.v, 16));
        EXPECT_LE(t.vocab_block, c.v);
        EXPECT_TRUE(t.vocab_block == c.v || t.vocab_block % 16 == 0);
        const kernels::LmHeadTiling least{1, std::min<int64_t>(c.v, 16)};
        const int64_t budget = kernels::lm_head_budget_bytes(c.n, c.v, bytes);
        if (kernels::lm_head_scratch_bytes(least, c.n, c.h, split, acc) <= budget) {
          EXPECT_LE(kernels::lm_head_scratch_bytes(t, c.n, c.h, split, acc), budget);
        }
      }
  }
  // The 70B bench shapes get tall, wide GEMM tiles (W is re-read once per row chunk).
  const auto t = kernels::plan_lm_head_tiling(4096, 128256, 8192, 2, true, true, 0);
  EXPECT_GE(t.rows, 256);
  EXPECT_GE(t.vocab_block, 4 * t.rows);
}

TEST(LmHeadTiling, GivenChunkRowsAreKept) {
  EXPECT_EQ(kernels::plan_lm_head_tiling(11, 17, 7, 4, false, false, 4).rows, 4);
  EXPECT_EQ(kernels::plan_lm_head_tiling(11, 17, 7, 4, false, false, 40).rows, 11);
}

}  // namespace
