// The lm_head evaluation statistics on the CPU (engine/lm_head_eval.h) against a naive
// reference that materialises the logits with ops::matmul: exact argmax (first index of
// ties) on every chunking, and the loss within its derived bound; the argmax rule itself.
//
// Both sides round each logit from the same double dot product (engine/cpu/matmul.cpp),
// so the logits are bitwise equal; lse is double on both (V terms: error <= 2 V u_d
// (1 + |lse|), u_d = 2^-53) and the loss is rounded once to float (u = 2^-24):
//   |loss - ref| <= u |ref| + 4 V u_d (1 + |lse|).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/lm_head_eval.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "kernels/math/cross_entropy.h"

using engine::Tensor;

namespace {

constexpr int64_t kN = 37, kH = 9, kV = 53;

struct Case {
  Tensor h, w, t;
};

// Random h, W, targets with ~30% ignored rows; W rows 4, 20 and 41 equal and large, and
// rows 10..14 of h aligned with them, so those rows tie exactly three ways at the top.
Case make_case(uint64_t seed) {
  engine::Generator gen(seed);
  std::vector<float> h = engine::uniform({kN, kH}, -1.0f, 1.0f, gen).to_floats();
  std::vector<float> w = engine::uniform({kV, kH}, -0.5f, 0.5f, gen).to_floats();
  std::vector<float> u = engine::uniform({kN}, 0.0f, 1.0f, gen).to_floats();
  for (int64_t v : {4, 20, 41})
    for (int64_t p = 0; p < kH; ++p) w[v * kH + p] = 0.75f;
  for (int64_t n = 10; n < 15; ++n)
    for (int64_t p = 0; p < kH; ++p) h[n * kH + p] = 0.5f + 0.01f * float(p);
  std::vector<int32_t> t(kN);
  for (int64_t n = 0; n < kN; ++n)
    t[n] = u[n] < 0.3f && (n < 10 || n >= 15) ? -100 : static_cast<int32_t>(u[n] * 1000) % kV;
  return {Tensor::from_floats(h, {kN, kH}), Tensor::from_floats(w, {kV, kH}), Tensor::from_ints(t, {kN})};
}

TEST(LmHeadEval, MatchesMaterialisedLogitsForEveryChunking) {
  const Case c = make_case(3);
  const std::vector<float> z = engine::ops::matmul(c.h, c.w, false, true).to_floats();
  const std::vector<int32_t> t = c.t.to_ints();
  const double ud = std::ldexp(1.0, -53), u = std::ldexp(1.0, -24);
  for (int64_t chunk : {int64_t(0), int64_t(1), int64_t(4), int64_t(16), kN}) {
    SCOPED_TRACE("chunk_rows " + std::to_string(chunk));
    const engine::LmHeadEval r = engine::lm_head_eval(c.h, c.w, c.t, -100, chunk);
    ASSERT_EQ(r.loss.shape(), engine::Shape{kN});
    const std::vector<float> loss = r.loss.to_floats();
    const std::vector<int32_t> arg = r.argmax.to_ints();
    for (int64_t n = 0; n < kN; ++n) {
      if (t[n] == -100) {
        EXPECT_EQ(loss[n], 0.0f) << "row " << n;
        EXPECT_EQ(arg[n], -1) << "row " << n;
        continue;
      }
      const float* zn = z.data() + n * kV;
      int32_t best = 0;
      double m = zn[0];
      for (int32_t v = 1; v < kV; ++v)
        if (zn[v] > zn[best]) best = v;
      m = zn[best];
      double s = 0;
      for (int64_t v = 0; v < kV; ++v) s += std::exp(double(zn[v]) - m);
      const double lse = m + std::log(s), ref = lse - zn[t[n]];
      EXPECT_EQ(arg[n], best) << "row " << n;
      EXPECT_NEAR(loss[n], ref, u * std::fabs(ref) + 4 * kV * ud * (1 + std::fabs(lse))) << "row " << n;
    }
    for (int64_t n = 10; n < 15; ++n) EXPECT_EQ(arg[n], 4) << "tied row " << n;
  }
}

TEST(LmHeadEval, NoCountedRowAndBadTargets) {
  const Case c = make_case(4);
  const engine::LmHeadEval r =
      engine::lm_head_eval(c.h, c.w, Tensor::from_ints(std::vector<int32_t>(kN, -100), {kN}));
  for (float x : r.loss.to_floats()) EXPECT_EQ(x, 0.0f);
  for (int32_t x : r.argmax.to_ints()) EXPECT_EQ(x, -1);
  std::vector<int32_t> bad(kN, 0);
  bad[7] = kV;
  EXPECT_THROW(engine::lm_head_eval(c.h, c.w, Tensor::from_ints(bad, {kN})), engine::Error);
}

// The rule the CPU loop and the kernels' merge trees share: a total order (NaN first, then
// larger values, then smaller indices), so every merge order finds the same winner.
TEST(LmHeadEval, ArgmaxMergeIsOrderFree) {
  using kmath::CeArgmax;
  const std::vector<CeArgmax> xs = {{1.0f, 5}, {3.0f, 9}, {3.0f, 2}, {-INFINITY, 0}, {3.0f, 7}, {2.0f, 1}};
  std::vector<size_t> order(xs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  do {
    CeArgmax a = kmath::ce_argmax_empty();
    for (size_t i : order) a = kmath::ce_argmax_merge(a, xs[i]);
    ASSERT_EQ(a.index, 2);
    ASSERT_EQ(a.value, 3.0f);
  } while (std::next_permutation(order.begin(), order.end()));
  // -inf beats the empty state; NaN ranks above every number (torch.argmax).
  EXPECT_EQ(kmath::ce_argmax_add(kmath::ce_argmax_empty(), -INFINITY, 3).index, 3);
  EXPECT_EQ(kmath::ce_argmax_merge({5.0f, 0}, {NAN, 4}).index, 4);
  EXPECT_EQ(kmath::ce_argmax_merge({NAN, 6}, {NAN, 4}).index, 4);
}

}  // namespace
