// Sequence tiling (engine/tiling.h) on the CPU: an MLP-shaped row-wise function run over
// row tiles gives the untiled output bitwise and the untiled input gradient bitwise (the
// per-row arithmetic is the same), parameter gradients within the rounding of summing
// per-tile partials, and gradients that match central finite differences.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/tiling.h"
#include "tests/support/compare.h"

using engine::Tensor;
namespace ops = engine::ops;

namespace {

constexpr int64_t kRows = 13, kHidden = 6, kInter = 10;

struct Mlp {
  Tensor gate, up, down;  // [inter, hidden], [inter, hidden], [hidden, inter]
  explicit Mlp(uint64_t seed) {
    engine::Generator gen(seed);
    gate = engine::normal({kInter, kHidden}, 0, 0.5f, gen).set_requires_grad(true);
    up = engine::normal({kInter, kHidden}, 0, 0.5f, gen).set_requires_grad(true);
    down = engine::normal({kHidden, kInter}, 0, 0.5f, gen).set_requires_grad(true);
  }
  engine::TiledFn fn() const {
    return [g = gate, u = up, d = down](const Tensor& x, int64_t) {
      Tensor act = ops::swiglu(ops::matmul(x, g, false, true), ops::matmul(x, u, false, true));
      return ops::matmul(act, d, false, true);
    };
  }
  std::vector<Tensor> params() const { return {gate, up, down}; }
};

// L = sum(y * r) for fixed r: dL/dy = r.
Tensor weighted_sum(const Tensor& y, const Tensor& r) { return ops::sum(ops::mul(y, r)); }

struct TiledRun {
  std::vector<float> y, dx;
  std::vector<std::vector<float>> dparams;
};

TiledRun run(int64_t tile_rows) {
  Mlp mlp(3);
  engine::Generator gen(5);
  Tensor x = engine::normal({1, kRows, kHidden}, 0, 1, gen).set_requires_grad(true);
  Tensor r = engine::normal({1, kRows, kHidden}, 0, 1, gen);
  Tensor y = engine::tiled_rows(mlp.fn(), x, tile_rows);
  engine::backward(weighted_sum(y, r));
  TiledRun out{y.to_floats(), x.grad().to_floats(), {}};
  for (const Tensor& p : mlp.params()) out.dparams.push_back(p.grad().to_floats());
  return out;
}

}  // namespace

TEST(TiledRows, EqualsUntiled) {
  const TiledRun ref = run(0);
  for (int64_t tile : {1, 4, 5, 12}) {
    SCOPED_TRACE("tile rows " + std::to_string(tile));
    const TiledRun got = run(tile);
    testing_support::expect_bitwise(got.y, ref.y, "output");
    testing_support::expect_bitwise(got.dx, ref.dx, "input gradient");
    // Each tile's partial of a parameter gradient is one double sum rounded once (CPU
    // reference), then the ceil(rows / tile) partials are added in f32: at most one
    // rounding per tile on terms no larger than the gradient's typical size.
    const double tiles = std::ceil(double(kRows) / tile);
    for (size_t k = 0; k < ref.dparams.size(); ++k)
      testing_support::expect_within(
          got.dparams[k], ref.dparams[k],
          testing_support::relative_tolerance(ref.dparams[k], testing_support::kUnitRoundoffF32,
                                              tiles * testing_support::kUnitRoundoffF32),
          "parameter gradient " + std::to_string(k));
  }
}

// Central differences of L = sum(y r) along each of a few elements of x and of every
// parameter, with the tiled backward. Tolerance (tests/support/gradcheck.h's form):
// truncation |D(h) - D(2h)|, rounding K u S / h with S = sum |r_i| (|y_i| + rms y) over the
// outputs (K = the reduction length, hidden + intermediate, times 4 for the roundings
// inside swiglu), and K u (|g| + rms g) for the analytic side.
TEST(TiledRows, GradientsMatchFiniteDifferences) {
  Mlp mlp(7);
  engine::Generator gen(11);
  Tensor x = engine::normal({kRows, kHidden}, 0, 1, gen).set_requires_grad(true);
  Tensor r = engine::normal({kRows, kHidden}, 0, 1, gen);
  const int64_t tile = 4;
  engine::backward(weighted_sum(engine::tiled_rows(mlp.fn(), x, tile), r));
  std::vector<Tensor> checked{x, mlp.gate, mlp.up, mlp.down};
  const double u = testing_support::kUnitRoundoffF32, k = 4.0 * (kHidden + kInter), h = 1e-2;
  auto loss_and_scale = [&](double* scale) {
    engine::NoGradGuard no_grad;
    Tensor y = engine::tiled_rows(mlp.fn(), x, tile);
    const std::vector<float> yv = y.to_floats(), rv = r.to_floats();
    const double y_rms = testing_support::rms(yv);
    double l = 0, s = 0;
    for (size_t i = 0; i < yv.size(); ++i) {
      l += double(yv[i]) * rv[i];
      s += std::fabs(rv[i]) * (std::fabs(yv[i]) + y_rms);
    }
    if (scale) *scale = s;
    return l;
  };
  int compared = 0;
  for (const Tensor& t : checked) {
    const std::vector<float> g = t.grad().to_floats();
    const double g_rms = testing_support::rms(g);
    float* p = t.data<float>();
    for (int64_t j = 0; j < t.numel(); j += 7) {
      const float p0 = p[j];
      auto central = [&](double step) {
        p[j] = static_cast<float>(p0 + step);
        const double plus = loss_and_scale(nullptr);
        p[j] = static_cast<float>(p0 - step);
        const double minus = loss_and_scale(nullptr);
        p[j] = p0;
        return (plus - minus) / (2 * step);
      };
      double s = 0;
      loss_and_scale(&s);
      const double d_h = central(h), d_2h = central(2 * h);
      const double tol = std::fabs(d_h - d_2h) + k * u * s / h + k * u * (std::fabs(g[j]) + g_rms);
      EXPECT_NEAR(g[j], d_h, tol) << "element " << j << " of " << t.str();
      EXPECT_LT(tol, 0.05 * (std::fabs(g[j]) + g_rms)) << "tolerance too loose to mean anything";
      ++compared;
    }
  }
  EXPECT_GT(compared, 20);
}

// The untiled call (tile rows 0 or >= rows) records no tiling node: the graph is fn's own.
TEST(TiledRows, NoTilingNodeWhenOneTile) {
  Mlp mlp(1);
  engine::Generator gen(2);
  Tensor x = engine::normal({kRows, kHidden}, 0, 1, gen);
  for (int64_t tile : {int64_t{0}, kRows, 2 * kRows})
    EXPECT_NE(engine::tiled_rows(mlp.fn(), x, tile).grad_fn()->name(), "tiled_rows");
  EXPECT_EQ(engine::tiled_rows(mlp.fn(), x, 3).grad_fn()->name(), "tiled_rows");
}

TEST(CopyRows, CopiesTheRowsAndChecksTheRange) {
  Tensor x = Tensor::from_floats({0, 1, 2, 3, 4, 5, 6, 7}, {2, 2, 2});
  EXPECT_EQ(engine::copy_rows(x, 1, 2).to_floats(), (std::vector<float>{2, 3, 4, 5}));
  EXPECT_THROW(engine::copy_rows(x, 3, 2), engine::Error);
}
