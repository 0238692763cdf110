// The online softmax statistics shared by the CPU reference attention and the CUDA
// kernels (kernels/math/online_softmax.h): processed in tiles of any size, in float,
// they give the log-sum-exp of a one-pass double reference within a derived
// tolerance, in base e and in the kernels' base 2; merging states is associative to
// rounding; masked (-inf) scores never produce NaN.
//
// Tolerance (u = 2^-24, the float unit roundoff; W = max - min of the finite scores,
// n scores, n_t tiles). Scores are exact floats. Per exponential exp(x - c):
// the difference rounds with absolute error <= u W, the exponential (glibc expf/exp2f,
// < 1 ulp) adds 2u, so each term is off by a relative (W + 2) u. A term is then
// multiplied by at most n_t rescale factors exp(m - m'), each off by (W + 2) u plus u
// for the product; the in-tile sums and the running sum add at most (n + n_t) u
// (recursive summation of positive terms). So l has relative error
//   e_l <= (W + 2) u + n_t (W + 3) u + (n + n_t) u,
// which is also the absolute error of log l; log adds 2u |log l| and the final
// m + log l rounds with u |lse|. In base 2 the scores are first multiplied by log2 e
// (two roundings: 2u |x|, times ln 2 < 1 when converted back) and the result is
// multiplied by ln 2 (two more roundings, 2u |lse|).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/math/online_softmax.h"

namespace {

constexpr double kU = 1.0 / (1 << 24);  // float unit roundoff
const float kNegInf = -INFINITY;

using Stats = kmath::OnlineSoftmax<float>;
using Stats2 = kmath::OnlineSoftmax<float, true>;

// One-pass double reference: max, then sum of exp(x - max).
double lse_reference(const std::vector<float>& x) {
  double m = -INFINITY;
  for (float v : x) m = std::max(m, double(v));
  if (m == -INFINITY) return -INFINITY;
  double l = 0;
  for (float v : x) l += std::exp(double(v) - m);
  return m + std::log(l);
}

struct Range {
  double lo = INFINITY, hi = -INFINITY;
  double width() const { return hi >= lo ? hi - lo : 0.0; }
  double absmax() const { return hi >= lo ? std::max(std::fabs(lo), std::fabs(hi)) : 0.0; }
};
Range finite_range(const std::vector<float>& x) {
  Range r;
  for (float v : x)
    if (std::isfinite(v)) r.lo = std::min(r.lo, double(v)), r.hi = std::max(r.hi, double(v));
  return r;
}

// The derived bound of the header comment.
double tiled_tolerance(const std::vector<float>& x, int64_t tiles, double lse, bool base2) {
  const Range r = finite_range(x);
  const double w = r.width(), n = double(x.size()), nt = double(tiles);
  const double e_l = (w + 2) * kU + nt * (w + 3) * kU + (n + nt) * kU;
  double tol = e_l + 2 * kU * std::fabs(lse - r.hi) + kU * std::fabs(lse);
  if (base2) tol += 2 * kU * r.absmax() + 2 * kU * std::fabs(lse);
  return tol;
}

// Processes x in tiles of `tile` scores the way the kernels do: tile maximum, rescale,
// sum of exponentials relative to the new offset. T is Stats or Stats2 (then the
// scores are first converted to base 2, as the kernels pre-scale them).
template <class S>
S tiled(const std::vector<float>& x, size_t tile, bool base2) {
  const float to_base = base2 ? float(M_LOG2E) : 1.0f;
  S s;
  for (size_t t0 = 0; t0 < x.size(); t0 += tile) {
    const size_t t1 = std::min(x.size(), t0 + tile);
    float tile_max = kNegInf;
    for (size_t j = t0; j < t1; ++j) tile_max = std::max(tile_max, x[j] * to_base);
    s.rescale(tile_max);
    float sum = 0;
    for (size_t j = t0; j < t1; ++j) sum += S::exp(x[j] * to_base - s.offset());
    s.add_sum(sum);
  }
  return s;
}

std::vector<float> random_scores(size_t n, float width, float masked_fraction, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> value(-width / 2, width / 2), u01(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = u01(gen) < masked_fraction ? kNegInf : value(gen);
  return x;
}

TEST(OnlineSoftmax, AnyTilingGivesTheOnePassLogSumExp) {
  uint32_t seed = 1;
  for (size_t n : {1, 2, 7, 64, 129, 300, 2048})
    for (float width : {1.0f, 16.0f, 60.0f})
      for (float masked : {0.0f, 0.3f}) {
        std::vector<float> x = random_scores(n, width, masked, seed++);
        x[n / 2] = width / 4;  // at least one finite score
        const double ref = lse_reference(x);
        for (size_t tile : {size_t(1), size_t(3), size_t(16), size_t(64), n}) {
          const int64_t tiles = int64_t((n + tile - 1) / tile);
          const Stats s = tiled<Stats>(x, tile, false);
          EXPECT_NEAR(s.lse(), ref, tiled_tolerance(x, tiles, ref, false))
              << "n " << n << " width " << width << " tile " << tile;
          const Stats2 s2 = tiled<Stats2>(x, tile, true);
          EXPECT_NEAR(double(s2.lse()) * M_LN2, ref, tiled_tolerance(x, tiles, ref, true))
              << "base 2, n " << n << " width " << width << " tile " << tile;
        }
      }
}

TEST(OnlineSoftmax, OneScoreAtATimeEqualsTiles) {
  // add(x) is a tile of one score: the same state as tiled(x, 1) bit for bit.
  const std::vector<float> x = random_scores(100, 20.0f, 0.2f, 7);
  Stats a;
  for (float v : x) a.add(v);
  const Stats b = tiled<Stats>(x, 1, false);
  EXPECT_EQ(a.max, b.max);
  EXPECT_EQ(a.sum, b.sum);
}

TEST(OnlineSoftmax, MergingStatesIsAssociativeToRounding) {
  uint32_t seed = 100;
  for (size_t n : {3, 30, 300})
    for (float width : {4.0f, 40.0f}) {
      std::vector<float> x = random_scores(n, width, 0.1f, seed++);
      x[0] = 0.0f;
      const double ref = lse_reference(x);
      // Three disjoint parts, each reduced in tiles of 4, merged in every grouping.
      const size_t c1 = n / 3, c2 = 2 * n / 3;
      auto part = [&](size_t b, size_t e) {
        return tiled<Stats>(std::vector<float>(x.begin() + b, x.begin() + e), 4, false);
      };
      const Stats a = part(0, c1), b = part(c1, c2), c = part(c2, n);
      const Stats left = Stats::merge(Stats::merge(a, b), c);
      const Stats right = Stats::merge(a, Stats::merge(b, c));
      const Stats swapped = Stats::merge(Stats::merge(c, a), b);
      // Tiles of 4 in each part plus two merges (each one more rescale: an exponential
      // and a product, the same (W + 3) u per level as a tile step).
      const int64_t tiles = int64_t((c1 + 3) / 4 + (c2 - c1 + 3) / 4 + (n - c2 + 3) / 4) + 2;
      const double tol = tiled_tolerance(x, tiles, ref, false);
      EXPECT_NEAR(left.lse(), ref, tol) << n;
      EXPECT_NEAR(right.lse(), ref, tol) << n;
      EXPECT_NEAR(swapped.lse(), ref, tol) << n;
      EXPECT_NEAR(left.lse(), right.lse(), 2 * tol) << n;
      EXPECT_EQ(left.max, right.max);  // the maximum is exact in any order
    }
}

TEST(OnlineSoftmax, MaskedScoresNeverGiveNaN) {
  // Nothing seen yet: rescale by 0, exponentials relative to 0, lse -inf.
  Stats s;
  EXPECT_EQ(s.rescale(kNegInf), 0.0f);
  EXPECT_EQ(s.offset(), 0.0f);
  s.add_sum(Stats::exp(kNegInf - s.offset()));
  EXPECT_EQ(s.sum, 0.0f);
  EXPECT_EQ(s.lse(), kNegInf);
  // A real score, then a fully masked tile: the state does not move (factor exactly 1).
  s.add(1.5f);
  const Stats before = s;
  EXPECT_EQ(s.rescale(kNegInf), 1.0f);
  s.add_sum(Stats::exp(kNegInf - s.offset()));
  EXPECT_EQ(s.max, before.max);
  EXPECT_EQ(s.sum, before.sum);
  EXPECT_EQ(s.lse(), 1.5f);  // exp(0) = 1 exactly, log 1 = 0
  // Merging with an empty state is the identity, in either order.
  const Stats e;
  EXPECT_EQ(Stats::merge(s, e).sum, s.sum);
  EXPECT_EQ(Stats::merge(e, s).sum, s.sum);
  EXPECT_EQ(Stats::merge(e, e).lse(), kNegInf);
  EXPECT_FALSE(std::isnan(Stats::merge(e, e).sum));
}

TEST(OnlineSoftmax, RescaleFactorIsExpOfTheMaximumShift) {
  Stats s;
  s.add(2.0f);
  EXPECT_EQ(s.rescale(1.0f), 1.0f);  // lower tile maximum: nothing changes
  const float a = s.rescale(5.0f);
  EXPECT_NEAR(a, std::exp(-3.0), 2 * kU * std::exp(-3.0) + 3 * kU);
  EXPECT_EQ(s.max, 5.0f);
  EXPECT_NEAR(s.sum, std::exp(-3.0), 4 * kU);
}

}  // namespace
