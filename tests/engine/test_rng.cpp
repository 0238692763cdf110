// Philox4x32-10 against the Random123 known-answer vectors, and the draws built on it.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/rng.h"
#include "kernels/math/philox.h"

TEST(Philox, KnownAnswerVectors) {
  // Random123 kat_vectors: philox4x32 10 rounds, counter 0, key 0.
  kmath::Philox4 r = kmath::philox4x32_10(0, 0, 0);
  EXPECT_EQ(r.v[0], 0x6627e8d5u);
  EXPECT_EQ(r.v[1], 0xe169c58du);
  EXPECT_EQ(r.v[2], 0xbc57ac4cu);
  EXPECT_EQ(r.v[3], 0x9b00dbd8u);
  // All-ones counter and key.
  r = kmath::philox4x32_10(~0ull, ~0ull, ~0ull);
  EXPECT_EQ(r.v[0], 0x408f276du);
  EXPECT_EQ(r.v[1], 0x41c83b0eu);
  EXPECT_EQ(r.v[2], 0xa20bc7c6u);
  EXPECT_EQ(r.v[3], 0x6d5451fdu);
}

TEST(Philox, UniformDrawsAreDeterministicAndSliceable) {
  engine::Tensor a = engine::Tensor::empty({100});
  engine::Tensor b = engine::Tensor::empty({60});
  engine::fill_uniform(a, -1, 1, 7, 1000);
  engine::fill_uniform(b, -1, 1, 7, 1040);  // counters 1040.. = a[40..]
  for (int i = 0; i < 60; ++i) EXPECT_EQ(a.data<float>()[40 + i], b.data<float>()[i]);
}

TEST(Philox, UniformAndNormalMoments) {
  engine::Generator gen(3);
  const int n = 200000;
  auto u = engine::uniform({n}, 0, 1, gen).to_floats();
  auto z = engine::normal({n}, 0, 1, gen).to_floats();
  double su = 0, sz = 0, sz2 = 0;
  for (int i = 0; i < n; ++i) {
    ASSERT_GE(u[i], 0.0f);
    ASSERT_LT(u[i], 1.0f);
    su += u[i];
    sz += z[i];
    sz2 += double(z[i]) * z[i];
  }
  // Six standard errors: uniform mean sd = sqrt(1/12 / n), normal mean sd = 1/sqrt(n),
  // variance estimate sd = sqrt(2 / n).
  EXPECT_NEAR(su / n, 0.5, 6 * std::sqrt(1.0 / 12 / n));
  EXPECT_NEAR(sz / n, 0.0, 6 / std::sqrt(double(n)));
  EXPECT_NEAR(sz2 / n, 1.0, 6 * std::sqrt(2.0 / n));
}
