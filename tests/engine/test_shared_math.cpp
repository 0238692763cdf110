// Tests of the per-element math shared by the CPU reference and the CUDA kernels
// (kernels/math/activations.h, kernels/math/rope.h) and of the rope and dropout
// properties that follow from it. Every expected value is computed here in double,
// independently of the code under test; tolerances are multiples of the fp32
// epsilon derived in the comments. Gradient checks of the ops live in the op harness.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "kernels/math/activations.h"
#include "kernels/math/philox.h"
#include "kernels/math/rope.h"

namespace {

using engine::Shape;
using engine::Tensor;

constexpr double kEps = FLT_EPSILON;

double silu_ref(double x) { return x / (1.0 + std::exp(-x)); }

// Central difference in double. Truncation error h^2 |f'''| / 6 < 1e-10 and rounding
// error ~1e-16 * |f| / h < 1e-9 for |f| <= 30: both far below the fp32 tolerances.
template <class F>
double central_diff(F f, double x) {
  const double h = 1e-5;
  return (f(x + h) - f(x - h)) / (2 * h);
}

// The Llama-3.1-8B rope: theta 500000, head_dim 128, llama3 scaling 8 / 1 / 4 / 8192.
engine::RopeConfig llama31_config() {
  engine::RopeConfig c;
  c.theta = 500000.0f;
  c.scaling_factor = 8.0f;
  c.low_freq_factor = 1.0f;
  c.high_freq_factor = 4.0f;
  c.original_max_position = 8192.0f;
  return c;
}

TEST(SharedMath, SiluAndDerivativeMatchDoubleAndFiniteDifferences) {
  for (int k = -60; k <= 60; ++k) {
    const float x = 0.33f * static_cast<float>(k) + 0.01f;  // -19.8 .. 19.8, never exactly 0
    const double xd = x;
    // silu = x * 1/(1+e^-x): expf, the add, the divide and the multiply each add at
    // most ~1 ulp of relative error, so 4 eps relative.
    const double s = silu_ref(xd);
    EXPECT_NEAR(kmath::silu(x), s, 4 * kEps * std::abs(s)) << "x = " << x;
    // silu' = s (1 + x (1 - s)): 1 - s cancels for large x, leaving an absolute error
    // of ~eps in (1 - s) that x multiplies: bound 8 eps (1 + |x|).
    const double ds = central_diff(silu_ref, xd);
    EXPECT_NEAR(kmath::silu_grad(x), ds, 8 * kEps * (1 + std::abs(xd))) << "x = " << x;

    // swiglu(g, u) = silu(g) u and its partials, with u varying along with g.
    const float up = 1.5f - 0.25f * x;
    const double ud = up;
    EXPECT_NEAR(kmath::swiglu(x, up), s * ud, 6 * kEps * std::abs(s * ud)) << "x = " << x;
    const double dgate = central_diff([&](double g) { return silu_ref(g) * ud; }, xd);
    EXPECT_NEAR(kmath::swiglu_grad_gate(x, up), dgate,
                10 * kEps * (1 + std::abs(xd)) * std::abs(ud) + 1e-9)
        << "x = " << x;
    const double dup = central_diff([&](double u) { return silu_ref(xd) * u; }, ud);
    EXPECT_NEAR(kmath::swiglu_grad_up(x), dup, 4 * kEps * std::abs(s) + 1e-9) << "x = " << x;
  }
  EXPECT_EQ(kmath::silu(0.0f), 0.0f);
  EXPECT_EQ(kmath::silu_grad(0.0f), 0.5f);
}

TEST(SharedMath, RopeInvFreqWithoutScalingIsThetaPower) {
  kmath::RopeConfig p;  // theta 10000, no scaling
  for (int i = 0; i < 64; ++i) {
    const double expect = std::pow(10000.0, -2.0 * i / 128.0);
    // powf (<= 1 ulp) then a reciprocal (0.5 ulp); 2i/128 is exact in fp32.
    EXPECT_NEAR(kmath::rope_inv_freq(i, 128, p), expect, 4 * kEps * expect) << "i = " << i;
  }
}

TEST(SharedMath, Llama3InvFreqMatchesDefinitionInAllThreeRegimes) {
  // facts.md: inv_i = theta^(-2i/d), wavelen = 2 pi / inv; keep if wavelen < orig/high,
  // divide by factor if wavelen > orig/low, otherwise interpolate with s.
  const double theta = 500000, factor = 8, low = 1, high = 4, orig = 8192;
  const int d = 128;
  const kmath::RopeConfig p = llama31_config();
  int kept = 0, divided = 0, smoothed = 0;
  for (int i = 0; i < d / 2; ++i) {
    const double inv = std::pow(theta, -2.0 * i / d);
    const double wavelen = 2 * std::numbers::pi / inv;
    double expect, rel_tol;
    if (wavelen < orig / high) {
      expect = inv;
      rel_tol = 4 * kEps;  // powf and a reciprocal, as above
      ++kept;
    } else if (wavelen > orig / low) {
      expect = inv / factor;
      rel_tol = 4 * kEps;  // the division by 8 is exact
      ++divided;
    } else {
      const double s = (orig / wavelen - low) / (high - low);
      expect = (1 - s) * inv / factor + s * inv;
      EXPECT_GT(expect, inv / factor) << "i = " << i;
      EXPECT_LT(expect, inv) << "i = " << i;
      // orig/wavelen in [1, 4] carries ~6 roundings (~24 eps absolute), so s is off
      // by ~10 eps; the result inv (1/8 + 7s/8) >= inv/8 magnifies that by at most 7.
      rel_tol = 96 * kEps;
      ++smoothed;
    }
    EXPECT_NEAR(kmath::rope_inv_freq(i, d, p), expect, rel_tol * expect) << "i = " << i;
  }
  // For this config: pairs 0..28 kept, 29..34 interpolated, 35..63 divided.
  EXPECT_EQ(kept, 29);
  EXPECT_EQ(smoothed, 6);
  EXPECT_EQ(divided, 29);
}

TEST(SharedMath, RopeRotationPreservesNormAndInverts) {
  const kmath::RopeConfig p = llama31_config();
  for (uint64_t k = 0; k < 20000; ++k) {
    const float x1 = kmath::philox_normal(3, 0, 2 * k), x2 = kmath::philox_normal(3, 0, 2 * k + 1);
    // Angles from real positions (up to 128k) and frequencies, so cos/sin see large arguments.
    const float angle = kmath::rope_angle(static_cast<int64_t>(k * 7),
                                          kmath::rope_inv_freq(static_cast<int>(k % 64), 128, p));
    const float c = std::cos(angle), s = std::sin(angle);
    float y1, y2, z1, z2;
    kmath::rope_rotate_pair(x1, x2, c, s, &y1, &y2);
    kmath::rope_rotate_pair(y1, y2, c, -s, &z1, &z2);
    const double norm_x = std::hypot(double{x1}, double{x2});
    // Each output: two products and a sum (1.5 ulp) plus cos/sin errors (1 ulp each)
    // of terms bounded by |x|: under 4 eps |x| per component, ~6 eps |x| in the norm.
    EXPECT_NEAR(std::hypot(double{y1}, double{y2}), norm_x, 8 * kEps * norm_x) << "k = " << k;
    // Two rotations: twice the per-component error.
    EXPECT_NEAR(z1, x1, 8 * kEps * norm_x) << "k = " << k;
    EXPECT_NEAR(z2, x2, 8 * kEps * norm_x) << "k = " << k;
  }
}

TEST(SharedMath, RopeOpMatchesRotateHalfFormula) {
  const int64_t batch = 2, seq = 9, heads = 3, dh = 16, half = dh / 2, offset = 4000;
  engine::Generator gen(11);
  Tensor x = engine::normal(Shape{batch, seq, heads, dh}, 0.0f, 1.0f, gen);
  engine::RopeConfig cfg = llama31_config();
  cfg.original_max_position = 64.0f;  // so that dh = 16 also spans all three regimes
  const std::vector<float> y = engine::ops::rope(x, cfg, offset).to_floats();
  const std::vector<float> xv = x.to_floats();
  for (int64_t row = 0; row < batch * seq * heads; ++row) {
    const int64_t t = (row / heads) % seq;
    for (int64_t j = 0; j < dh; ++j) {
      // q' = q cos + rotate_half(q) sin, rotate_half(q) = cat(-q2, q1), angle of pair j % half.
      const int64_t i = j % half;
      const double angle = kmath::rope_angle(offset + t, kmath::rope_inv_freq(static_cast<int>(i),
                                                                              static_cast<int>(dh), cfg));
      const double q = xv[row * dh + j];
      const double rot = j < half ? -double{xv[row * dh + j + half]} : double{xv[row * dh + j - half]};
      const double expect = q * std::cos(angle) + rot * std::sin(angle);
      EXPECT_NEAR(y[row * dh + j], expect, 4 * kEps * (std::abs(q) + std::abs(rot)))
          << "row " << row << " j " << j;
    }
  }
}

TEST(SharedMath, RopeBackwardIsTheAdjointRotation) {
  // For a linear map R, <g, R x> = <R^T g, x>; backward must produce R^T g.
  engine::Generator gen(5);
  Tensor x = engine::normal(Shape{1, 6, 2, 128}, 0.0f, 1.0f, gen);
  Tensor g = engine::normal(Shape{1, 6, 2, 128}, 0.0f, 1.0f, gen);
  x.set_requires_grad();
  Tensor y = engine::ops::rope(x, llama31_config(), 70000);
  engine::backward({y}, {g});
  const std::vector<float> yv = y.to_floats(), gv = g.to_floats(), xv = x.to_floats(),
                           dx = x.grad().to_floats();
  double lhs = 0, rhs = 0, scale = 0;
  for (size_t k = 0; k < yv.size(); ++k) {
    lhs += double{gv[k]} * yv[k];
    rhs += double{dx[k]} * xv[k];
    scale += std::abs(double{gv[k]}) * std::abs(double{xv[k]});
  }
  // Per-element rotation error ~4 eps of |g| or |x| enters each product once each side.
  EXPECT_NEAR(lhs, rhs, 8 * kEps * scale);
}

TEST(SharedMath, RopeWithOffsetEqualsTailOfLongerSequence) {
  const int64_t batch = 2, seq = 12, heads = 3, dh = 128, k = 5;
  engine::Generator gen(17);
  Tensor x = engine::normal(Shape{batch, seq, heads, dh}, 0.0f, 1.0f, gen);
  const std::vector<float> xv = x.to_floats();
  const int64_t row = heads * dh;  // elements per (b, t)
  std::vector<float> tail_in;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = k; t < seq; ++t)
      for (int64_t e = 0; e < row; ++e) tail_in.push_back(xv[(b * seq + t) * row + e]);
  Tensor tail = Tensor::from_floats(tail_in, Shape{batch, seq - k, heads, dh});
  for (int64_t base : {int64_t{0}, int64_t{100000}}) {
    const std::vector<float> full = engine::ops::rope(x, llama31_config(), base).to_floats();
    const std::vector<float> part = engine::ops::rope(tail, llama31_config(), base + k).to_floats();
    // Same position -> same fp32 angle -> bitwise the same result.
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t t = k; t < seq; ++t)
        for (int64_t e = 0; e < row; ++e)
          ASSERT_EQ(part[((b * (seq - k)) + t - k) * row + e], full[(b * seq + t) * row + e])
              << "base " << base << " b " << b << " t " << t << " e " << e;
  }
}

TEST(SharedMath, DropoutKeepFractionWithinBinomialBound) {
  const uint64_t n = 100000;
  for (float p : {0.05f, 0.1f, 0.5f, 0.9f}) {
    uint64_t kept = 0;
    for (uint64_t i = 0; i < n; ++i) kept += kmath::dropout_keep(42, 1000, i, p) ? 1 : 0;
    // kept ~ Binomial(n, 1 - p). Draws are multiples of 2^-24, which moves the keep
    // probability by < 2^-24 (n 2^-24 < 0.01 elements); 6 sigma fails by chance
    // with probability ~2e-9.
    const double pd = p;
    const double sigma = std::sqrt(n * pd * (1 - pd));
    EXPECT_NEAR(static_cast<double>(kept), n * (1 - pd), 6 * sigma + 1) << "p = " << p;
  }
  EXPECT_FLOAT_EQ(kmath::dropout_scale(0.25f), 1.0f / 0.75f);
}

// The kernels' four-at-a-time path is the per-element definition, bit for bit.
TEST(SharedMath, DropoutFourFromOneBlockEqualsTheDefinition) {
  const float p = 0.35f, scale = kmath::dropout_scale(p);
  for (uint64_t group : {uint64_t{0}, uint64_t{1}, uint64_t{12345}, (uint64_t{1} << 40) + 7}) {
    float x[4] = {1.5f, -2.0f, 3.25f, 0.75f};
    const float x0[4] = {x[0], x[1], x[2], x[3]};
    kmath::dropout_apply4(x, 99, 5000, group, p, scale);
    for (int j = 0; j < 4; ++j)
      EXPECT_EQ(x[j], kmath::dropout_apply(x0[j], 99, 5000, 4 * group + j, p, scale))
          << "group " << group << " element " << j;
  }
  // The four words of a block are four different draws: over many blocks each word
  // position keeps about 1 - p on its own (6 sigma, as above).
  const int blocks = 20000;
  for (int j = 0; j < 4; ++j) {
    int kept = 0;
    for (int b = 0; b < blocks; ++b) kept += kmath::dropout_keep(3, 0, uint64_t(4 * b + j), p);
    const double sigma = std::sqrt(blocks * double(p) * (1 - double(p)));
    EXPECT_NEAR(kept, blocks * (1 - double(p)), 6 * sigma + 1) << "word " << j;
  }
}

TEST(SharedMath, DropoutOpMaskScaleAndBackward) {
  const float p = 0.3f;
  const uint64_t seed = 7, offset = 11;
  engine::Generator gen(23);
  Tensor x = engine::uniform(Shape{40, 25}, 1.0f, 2.0f, gen);  // nonzero, so drops are visible
  Tensor g = engine::uniform(Shape{40, 25}, 1.0f, 2.0f, gen);
  x.set_requires_grad();
  Tensor y = engine::ops::dropout(x, p, seed, offset);
  engine::backward({y}, {g});
  const std::vector<float> xv = x.to_floats(), yv = y.to_floats(), gv = g.to_floats(),
                           dx = x.grad().to_floats();
  const float scale = kmath::dropout_scale(p);
  size_t dropped = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    const bool keep = kmath::dropout_keep(seed, offset, i, p);
    dropped += keep ? 0 : 1;
    EXPECT_EQ(yv[i], keep ? xv[i] * scale : 0.0f) << "i = " << i;
    EXPECT_EQ(dx[i], keep ? gv[i] * scale : 0.0f) << "i = " << i;  // same mask, regenerated
  }
  EXPECT_GT(dropped, 0u);
  EXPECT_LT(dropped, xv.size());

  // Another offset is another mask.
  const std::vector<float> y2 = engine::ops::dropout(x.detach(), p, seed, offset + xv.size()).to_floats();
  EXPECT_NE(y2, yv);

  // p = 0 is the identity.
  EXPECT_EQ(engine::ops::dropout(x.detach(), 0.0f, seed, offset).to_floats(), xv);
}

TEST(SharedMath, DropoutRejectsProbabilityOutsideZeroOne) {
  Tensor x = Tensor::full(Shape{4}, 1.0f);
  EXPECT_THROW(engine::ops::dropout(x, 1.0f, 0, 0), engine::Error);
  EXPECT_THROW(engine::ops::dropout(x, -0.1f, 0, 0), engine::Error);
  EXPECT_THROW(engine::ops::dropout(x, std::numeric_limits<float>::quiet_NaN(), 0, 0),
               engine::Error);
}

}  // namespace
