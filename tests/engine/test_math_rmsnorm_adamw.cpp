// Tests of the RMSNorm and AdamW math shared by the CPU reference and the CUDA kernels
// (kernels/math/rmsnorm.h, kernels/math/adamw.h). Expected values are computed here in
// double, independently; tolerances are multiples of the fp32 epsilon u = 2^-24 (unit
// roundoff) derived in the comments. The AdamW update is also checked bit for bit
// against the optimizer's previous inline loop, which fixes the operation order the
// CUDA kernel must reproduce.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "engine/optim/adamw.h"
#include "engine/rng.h"
#include "kernels/math/adamw.h"
#include "kernels/math/rmsnorm.h"
#include "tests/support/compare.h"

namespace {

using engine::Tensor;

constexpr double kU = 1.0 / (1 << 24);  // fp32 unit roundoff

std::vector<float> random_floats(int64_t n, float lo, float hi, uint64_t seed) {
  engine::Generator gen(seed);
  return engine::uniform({n}, lo, hi, gen).to_floats();
}

TEST(RmsNormMath, RstdMatchesDouble) {
  for (double sum : {1e-3, 0.5, 3.0, 8192.0 * 4.0, 1e6}) {
    for (int64_t d : {1, 7, 8192}) {
      const float eps = 1e-5f;
      const double ref = 1.0 / std::sqrt(static_cast<float>(sum) / double(d) + eps);
      // Three correctly rounded operations (divide, add, sqrt) and the reciprocal: each
      // contributes at most u relative, the sqrt halves its input's error: < 4u.
      EXPECT_NEAR(kmath::rmsnorm_rstd(static_cast<float>(sum), d, eps), ref, 4 * kU * ref)
          << sum << " " << d;
    }
  }
}

// A row worked through the shared functions against the double-precision formulas
// of engine/cpu/norm_rope.cpp's header (the expanded r w g - r^3 x dot / D form).
TEST(RmsNormMath, RowForwardAndBackwardMatchDouble) {
  const int64_t d = 37;
  const float eps = 1e-5f;
  const std::vector<float> x = random_floats(d, -2.0f, 2.0f, 1);
  const std::vector<float> w = random_floats(d, 0.5f, 1.5f, 2);
  const std::vector<float> g = random_floats(d, -1.0f, 1.0f, 3);
  double sum_sq = 0, dot = 0;
  for (int64_t j = 0; j < d; ++j) {
    sum_sq += double(x[j]) * x[j];
    dot += double(g[j]) * w[j] * x[j];
  }
  const double r = 1.0 / std::sqrt(sum_sq / d + eps);
  const float rf = kmath::rmsnorm_rstd(static_cast<float>(sum_sq), d, eps);
  const float c = kmath::rmsnorm_dx_coef(static_cast<float>(dot), rf, d);
  double gmax = 0;
  for (int64_t k = 0; k < d; ++k) gmax = std::max(gmax, std::fabs(r * w[k] * g[k]));
  for (int64_t k = 0; k < d; ++k) {
    const double y = w[k] * (x[k] * r);
    EXPECT_NEAR(kmath::rmsnorm_apply(x[k], w[k], rf), y, 8 * kU * std::fabs(y) + 1e-30) << k;
    const double dx = r * w[k] * g[k] - r * r * r * x[k] * dot / d;
    // A handful of roundings on terms of size <= gmax; the difference of two such terms
    // can cancel, so the bound is absolute in gmax: 16 u gmax covers ~8 operations.
    EXPECT_NEAR(kmath::rmsnorm_dx(x[k], w[k], g[k], rf, c), dx, 16 * kU * gmax) << k;
    const double dw = g[k] * x[k] * r;
    EXPECT_NEAR(kmath::rmsnorm_dw_term(x[k], g[k], rf), dw, 8 * kU * std::fabs(dw)) << k;
  }
}

// With eps = 0, RMSNorm is invariant to scaling x, so dx is orthogonal to x:
// sum_k x_k dx_k = r dot (1 - r^2 mean(x^2)) = 0.
TEST(RmsNormMath, GradientIsOrthogonalToXWithoutEps) {
  const int64_t d = 64;
  const std::vector<float> x = random_floats(d, -1.0f, 1.0f, 4);
  const std::vector<float> w = random_floats(d, 0.5f, 1.5f, 5);
  const std::vector<float> g = random_floats(d, -1.0f, 1.0f, 6);
  double sum_sq = 0, dot = 0;
  for (int64_t j = 0; j < d; ++j) {
    sum_sq += double(x[j]) * x[j];
    dot += double(g[j]) * w[j] * x[j];
  }
  const float r = kmath::rmsnorm_rstd(static_cast<float>(sum_sq), d, 0.0f);
  const float c = kmath::rmsnorm_dx_coef(static_cast<float>(dot), r, d);
  double proj = 0, scale = 0;
  for (int64_t k = 0; k < d; ++k) {
    const double dx = kmath::rmsnorm_dx(x[k], w[k], g[k], r, c);
    proj += x[k] * dx;
    scale += std::fabs(x[k] * r * w[k] * g[k]);
  }
  // Each dx_k carries ~8 u of relative error on terms bounded by r |w g|.
  EXPECT_NEAR(proj, 0.0, 16 * kU * scale);
}

// The optimizer's loop before the update moved into kmath, verbatim: the shared
// function must reproduce it bit for bit (host float, no contraction).
void legacy_update(float& p, float g, float& m, float& v, const kmath::AdamWStep& s) {
  p *= 1.0f - s.lr * s.weight_decay;
  m = s.beta1 * m + (1.0f - s.beta1) * g;
  v = s.beta2 * v + (1.0f - s.beta2) * g * g;
  float denom = std::sqrt(v) / s.bias2_sqrt + s.eps;
  p -= s.step_size * m / denom;
}

kmath::AdamWStep step_for(int t, float lr, float wd) {
  kmath::AdamWStep s;
  s.lr = lr;
  s.weight_decay = wd;
  s.step_size = static_cast<float>(lr / (1.0 - std::pow(double(s.beta1), t)));
  s.bias2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(double(s.beta2), t)));
  return s;
}

TEST(AdamWMath, SharedUpdateIsBitwiseTheLegacyLoop) {
  const int64_t n = 4096;
  std::vector<float> p = random_floats(n, -1.0f, 1.0f, 7), m(n, 0.0f), v(n, 0.0f);
  std::vector<float> p2 = p, m2 = m, v2 = v;
  for (int t = 1; t <= 5; ++t) {
    const std::vector<float> g = random_floats(n, -3.0f, 3.0f, 100 + t);
    const kmath::AdamWStep s = step_for(t, 1e-3f, 0.01f);
    for (int64_t j = 0; j < n; ++j) {
      kmath::adamw_update(p[j], g[j], m[j], v[j], s);
      legacy_update(p2[j], g[j], m2[j], v2[j], s);
    }
  }
  testing_support::expect_bitwise(p, p2, "param");
  testing_support::expect_bitwise(m, m2, "m");
  testing_support::expect_bitwise(v, v2, "v");
}

TEST(AdamWMath, MatchesDoubleTranscriptionOfTorch) {
  float p = 0.75f, m = 0.0f, v = 0.0f;
  double pd = 0.75, md = 0, vd = 0;
  const float grads[4] = {0.3f, -0.1f, 2.0f, 1e-4f};
  for (int t = 1; t <= 4; ++t) {
    const kmath::AdamWStep s = step_for(t, 0.01f, 0.1f);
    kmath::adamw_update(p, grads[t - 1], m, v, s);
    const double g = grads[t - 1];
    pd *= 1 - 0.01 * double(0.1f);
    md = 0.9 * md + 0.1 * g;
    vd = 0.999 * vd + 0.001 * g * g;
    const double mhat = md / (1 - std::pow(0.9, t)), vhat = vd / (1 - std::pow(0.999, t));
    pd -= 0.01 * mhat / (std::sqrt(vhat) + 1e-8);
  }
  // ~10 roundings per step on values of size <= 1, four steps, plus the fp32 rounding
  // of the hyper-parameters (beta 0.9f etc. differ from 0.9 by ~u): 100 u.
  EXPECT_NEAR(p, pd, 100 * kU);
  EXPECT_NEAR(m, md, 100 * kU);
}

TEST(AdamWMath, ZeroGradientOnlyDecays) {
  float p = 2.0f, m = 0.0f, v = 0.0f;
  kmath::adamw_update(p, 0.0f, m, v, step_for(1, 0.1f, 0.0f));
  EXPECT_EQ(p, 2.0f);
  kmath::adamw_update(p, 0.0f, m, v, step_for(2, 0.1f, 0.5f));
  EXPECT_EQ(p, 2.0f * (1.0f - 0.1f * 0.5f));
  EXPECT_EQ(m, 0.0f);
  EXPECT_EQ(v, 0.0f);
}

// The CPU optimizer runs the shared update (bitwise the legacy loop).
TEST(AdamWMath, OptimizerUsesTheSharedUpdate) {
  const engine::optim::AdamWConfig cfg{.lr = 0.003f, .weight_decay = 0.05f};
  std::vector<float> init = random_floats(33, -1.0f, 1.0f, 8);
  Tensor p = Tensor::from_floats(init, {33});
  engine::optim::AdamW opt({p}, cfg);
  std::vector<float> q = init, m(33, 0.0f), v(33, 0.0f);
  for (int t = 1; t <= 3; ++t) {
    const std::vector<float> g = random_floats(33, -1.0f, 1.0f, 200 + t);
    p.set_grad(Tensor::from_floats(g, {33}));
    opt.step();
    kmath::AdamWStep s = step_for(t, cfg.lr, cfg.weight_decay);
    for (int j = 0; j < 33; ++j) legacy_update(q[j], g[j], m[j], v[j], s);
  }
  testing_support::expect_bitwise(p.to_floats(), q, "param");
}

}  // namespace
