// Semantics of the CPU reference attention (gradients are checked by the op harness):
// T = 1 passes v through, a tiny case matches a hand-computed softmax average, GQA
// equals MHA with the KV heads repeated, and the mask is causal.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "tests/support/compare.h"

namespace engine {
namespace {

std::vector<float> pseudo_random(int64_t n, uint32_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  uint32_t x = seed * 2654435761u + 1u;
  for (auto& f : v) {
    x = x * 1664525u + 1013904223u;  // LCG: deterministic inputs without a dependency
    f = static_cast<float>(x >> 8) / static_cast<float>(1u << 24) * 2.0f - 1.0f;
  }
  return v;
}

Tensor random_tensor(const Shape& shape, uint32_t seed, bool grad = false) {
  Tensor t = Tensor::from_floats(pseudo_random(shape.numel(), seed), shape);
  if (grad) t.set_requires_grad();
  return t;
}

// [B, T, Hkv, D] -> [B, T, Hkv * group, D], KV head g copied to heads g*group .. g*group+group-1.
Tensor repeat_heads(const Tensor& kv, int64_t group) {
  const int64_t b = kv.dim(0), t = kv.dim(1), h = kv.dim(2), d = kv.dim(3);
  std::vector<float> src = kv.to_floats(), dst;
  for (int64_t bt = 0; bt < b * t; ++bt)
    for (int64_t g = 0; g < h; ++g)
      for (int64_t r = 0; r < group; ++r)
        for (int64_t e = 0; e < d; ++e) dst.push_back(src[(bt * h + g) * d + e]);
  return Tensor::from_floats(dst, Shape{b, t, h * group, d});
}

using testing_support::expect_near_all;

TEST(AttentionRef, SingleTokenReturnsV) {
  // One key: softmax weight 1, so out = v of the head's KV head (GQA 4 -> 2).
  Tensor q = random_tensor(Shape{2, 1, 4, 3}, 1, true);
  Tensor k = random_tensor(Shape{2, 1, 2, 3}, 2, true);
  Tensor v = random_tensor(Shape{2, 1, 2, 3}, 3, true);
  Tensor out = ops::attention(q, k, v);
  ASSERT_EQ(out.shape(), q.shape());
  expect_near_all(out.to_floats(), repeat_heads(v, 2).to_floats(), 1e-6f);

  // Backward: out = v, so dq = dk = 0 and dv sums dO over the two query heads per KV head.
  Tensor dout = random_tensor(q.shape(), 4);
  backward({out}, {dout});
  for (float x : q.grad().to_floats()) EXPECT_NEAR(x, 0.0f, 1e-6f);
  for (float x : k.grad().to_floats()) EXPECT_NEAR(x, 0.0f, 1e-6f);
  std::vector<float> g = dout.to_floats(), expected;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t kv = 0; kv < 2; ++kv)
      for (int64_t e = 0; e < 3; ++e)
        expected.push_back(g[(b * 4 + 2 * kv) * 3 + e] + g[(b * 4 + 2 * kv + 1) * 3 + e]);
  expect_near_all(v.grad().to_floats(), expected, 1e-6f);
}

TEST(AttentionRef, MatchesHandComputedSoftmaxAverage) {
  // B = 1, T = 2, one head, D = 2. Token 0 sees only itself; token 1 averages both.
  Tensor q = Tensor::from_floats({1, 0, 0.5f, -1}, Shape{1, 2, 1, 2});
  Tensor k = Tensor::from_floats({2, 1, -1, 3}, Shape{1, 2, 1, 2});
  Tensor v = Tensor::from_floats({1, 2, 3, -4}, Shape{1, 2, 1, 2});
  for (float scale : {0.0f, 0.7f}) {
    const double sc = scale == 0.0f ? 1.0 / std::sqrt(2.0) : scale;
    std::vector<float> out = ops::attention(q, k, v, scale).to_floats();
    // q1 = (0.5, -1): s0 = sc * (0.5*2 - 1*1) = 0, s1 = sc * (0.5*-1 - 1*3) = -3.5 sc.
    const double s0 = 0.0, s1 = -3.5 * sc;
    const double p0 = std::exp(s0) / (std::exp(s0) + std::exp(s1)), p1 = 1.0 - p0;
    EXPECT_NEAR(out[0], 1.0f, 1e-6f) << "scale " << scale;
    EXPECT_NEAR(out[1], 2.0f, 1e-6f) << "scale " << scale;
    EXPECT_NEAR(out[2], p0 * 1 + p1 * 3, 1e-6) << "scale " << scale;
    EXPECT_NEAR(out[3], p0 * 2 + p1 * -4, 1e-6) << "scale " << scale;
  }
}

TEST(AttentionRef, LargeScoresStayFinite) {
  // Scores of several hundred would overflow exp without max subtraction.
  Tensor q = Tensor::from_floats({30, 30, 30, 30}, Shape{1, 2, 1, 2});
  Tensor k = Tensor::from_floats({20, 20, 21, 21}, Shape{1, 2, 1, 2});
  Tensor v = Tensor::from_floats({1, 1, 5, 5}, Shape{1, 2, 1, 2});
  std::vector<float> out = ops::attention(q, k, v, 1.0f).to_floats();
  // Token 1: s = (1200, 1260), so all weight on key 1.
  expect_near_all(out, {1, 1, 5, 5}, 1e-6f);
}

TEST(AttentionRef, GqaEqualsMhaWithRepeatedKvHeads) {
  const int64_t group = 3;
  Tensor q = random_tensor(Shape{2, 5, 6, 4}, 10, true);
  Tensor k = random_tensor(Shape{2, 5, 2, 4}, 11, true);
  Tensor v = random_tensor(Shape{2, 5, 2, 4}, 12, true);
  Tensor dout = random_tensor(q.shape(), 13);
  Tensor gqa = ops::attention(q, k, v);
  backward({gqa}, {dout});

  Tensor q2 = q.detach().clone().set_requires_grad();
  Tensor k2 = repeat_heads(k, group).set_requires_grad();
  Tensor v2 = repeat_heads(v, group).set_requires_grad();
  Tensor mha = ops::attention(q2, k2, v2);
  backward({mha}, {dout});

  expect_near_all(gqa.to_floats(), mha.to_floats(), 1e-6f);
  expect_near_all(q.grad().to_floats(), q2.grad().to_floats(), 1e-5f);
  // A KV head's gradient is the sum over its group of the repeated heads' gradients.
  auto group_sum = [&](const Tensor& g) {
    std::vector<float> x = g.to_floats(), s;
    for (int64_t bt = 0; bt < 2 * 5; ++bt)
      for (int64_t kv = 0; kv < 2; ++kv)
        for (int64_t e = 0; e < 4; ++e) {
          float acc = 0;
          for (int64_t r = 0; r < group; ++r) acc += x[((bt * 6) + kv * group + r) * 4 + e];
          s.push_back(acc);
        }
    return s;
  };
  expect_near_all(k.grad().to_floats(), group_sum(k2.grad()), 1e-5f);
  expect_near_all(v.grad().to_floats(), group_sum(v2.grad()), 1e-5f);
}

TEST(AttentionRef, IsCausal) {
  const int64_t b = 2, t = 4, hq = 4, hkv = 2, d = 3;
  Tensor q = random_tensor(Shape{b, t, hq, d}, 20);
  Tensor k = random_tensor(Shape{b, t, hkv, d}, 21);
  Tensor v = random_tensor(Shape{b, t, hkv, d}, 22);
  std::vector<float> base = ops::attention(q, k, v).to_floats();

  // Change the last token's k and v: every earlier output stays bitwise the same.
  std::vector<float> kf = k.to_floats(), vf = v.to_floats();
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t i = 0; i < hkv * d; ++i) {
      kf[((bi * t + t - 1) * hkv) * d + i] += 5.0f;
      vf[((bi * t + t - 1) * hkv) * d + i] -= 7.0f;
    }
  std::vector<float> changed =
      ops::attention(q, Tensor::from_floats(kf, k.shape()), Tensor::from_floats(vf, v.shape()))
          .to_floats();
  bool last_changed = false;
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t ti = 0; ti < t; ++ti)
      for (int64_t i = 0; i < hq * d; ++i) {
        const int64_t at = (bi * t + ti) * hq * d + i;
        if (ti < t - 1) {
          EXPECT_EQ(base[at], changed[at]) << "token " << ti << " saw the future";
        }
        else last_changed |= base[at] != changed[at];
      }
  EXPECT_TRUE(last_changed);
}

TEST(AttentionRef, RejectsBadShapes) {
  Tensor q = Tensor::zeros(Shape{1, 2, 3, 4});
  Tensor kv = Tensor::zeros(Shape{1, 2, 2, 4});
  EXPECT_THROW(ops::attention(q, kv, kv), Error);  // 3 query heads, 2 KV heads
  Tensor k5 = Tensor::zeros(Shape{1, 2, 1, 5});
  EXPECT_THROW(ops::attention(q, k5, k5), Error);  // head dims differ
  Tensor k3 = Tensor::zeros(Shape{1, 3, 1, 4});
  EXPECT_THROW(ops::attention(q, k3, k3), Error);  // token counts differ
}

}  // namespace
}  // namespace engine
