// CUDA rms_norm and rope on Llama-sized rows, beyond the parity harness's small cases:
// the register-cached vector paths (2 and 4 packs per thread, hidden 4096 and 8192),
// several dw tiles with a partial last tile, a frozen norm weight (dx only) and a
// frozen input (dw only), bitwise repeatability, and rope at long-context positions.
//
// Tolerance, as in the parity harness (test_op_parity_cuda.cpp): per element
//   u_out |ref| + 2 K u_f32 (|ref| + rms(ref))
// with K the reduction length (D for rms_norm, the row sums; rows for dw), u_out the
// output type's unit roundoff. The CPU runs in f32/double on the same rounded inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"

namespace {

using engine::Device;
using engine::DType;
using engine::Shape;
using engine::Tensor;

using testing_support::expect_close_to_reference;

using testing_support::bitwise_equal;

// Host tensor rounded through dtype (what the device sees), as f32.
Tensor as_seen(const Tensor& t, DType dt) { return t.to_dtype(dt).to_dtype(DType::F32); }
Tensor on_device(const Tensor& t, DType dt) { return t.to_dtype(dt).to(Device::cuda()); }

struct NormGrads {
  Tensor y, dx, dw;
};

NormGrads run_norm(const Tensor& x, const Tensor& w, const Tensor& g, bool grad_x, bool grad_w) {
  Tensor xi = x.detach().set_requires_grad(grad_x), wi = w.detach().set_requires_grad(grad_w);
  Tensor y = engine::ops::rms_norm(xi, wi, 1e-5f);
  engine::backward({y}, {g});
  return {y, grad_x ? xi.grad() : Tensor(), grad_w ? wi.grad() : Tensor()};
}

TEST(RmsNormCuda, LlamaWidthsAllGradientSubsets) {
  SKIP_WITHOUT_GPU();
  // rows x d: 8192 bf16 = 1024 packs (4 per thread), 8192 f32 = 2048 packs (4 per
  // thread, 512 threads), 4096 bf16 = 2 per thread; 37 rows = 2 full dw tiles + 5 rows.
  const std::vector<Shape> shapes = {{37, 8192}, {2, 19, 4096}, {3, 1040}};
  engine::Generator gen(11);
  for (const Shape& s : shapes) {
    const Tensor x = engine::uniform(s, -2.0f, 2.0f, gen);
    const Tensor w = engine::uniform({s.last()}, 0.5f, 1.5f, gen);
    const Tensor g = engine::uniform(s, -1.0f, 1.0f, gen);
    for (DType dt : {DType::F32, DType::BF16}) {
      const NormGrads ref = run_norm(as_seen(x, dt), as_seen(w, dt), as_seen(g, dt), true, true);
      const Tensor xd = on_device(x, dt), wd = on_device(w, dt), gd = on_device(g, dt);
      const std::string what = s.str() + " " + engine::dtype_name(dt);
      const int64_t k = std::max(s.last(), s.rows());
      for (int subset = 0; subset < 3; ++subset) {  // both, dx only, dw only
        const bool gx = subset != 2, gw = subset != 1;
        const NormGrads got = run_norm(xd, wd, gd, gx, gw);
        const std::string sub = what + (gx ? " dx" : "") + (gw ? " dw" : "");
        expect_close_to_reference(got.y, ref.y, dt, s.last(), sub + " forward");
        if (gx) expect_close_to_reference(got.dx, ref.dx, dt, k, sub + " dx");
        if (gw) {
          expect_close_to_reference(got.dw, ref.dw, dt, k, sub + " dw");
          EXPECT_TRUE(bitwise_equal(got.dw, run_norm(xd, wd, gd, gx, gw).dw)) << sub << " repeat";
        }
      }
    }
  }
}

TEST(RopeCuda, LongContextPositionsAndWideHeads) {
  SKIP_WITHOUT_GPU();
  engine::RopeConfig llama31;  // Llama 3.1: theta 500000, llama3 scaling 8 / 1 / 4 / 8192
  llama31.theta = 500000.0f;
  llama31.scaling_factor = 8.0f;
  struct Case {
    Shape s;
    int64_t offset;
  };
  const std::vector<Case> cases = {{{2, 9, 4, 128}, 8000}, {{1, 3, 2, 256}, 131000}, {{1, 4, 3, 6}, 5}};
  engine::Generator gen(12);
  for (const Case& c : cases) {
    const Tensor x = engine::uniform(c.s, -1.0f, 1.0f, gen);
    const Tensor g = engine::uniform(c.s, -1.0f, 1.0f, gen);
    for (DType dt : {DType::F32, DType::BF16}) {
      const std::string what = c.s.str() + " offset " + std::to_string(c.offset) + " " +
                               engine::dtype_name(dt);
      Tensor xr = as_seen(x, dt).set_requires_grad(true);
      Tensor ref = engine::ops::rope(xr, llama31, c.offset);
      engine::backward({ref}, {as_seen(g, dt)});
      Tensor xd = on_device(x, dt).set_requires_grad(true);
      Tensor got = engine::ops::rope(xd, llama31, c.offset);
      engine::backward({got}, {on_device(g, dt)});
      // Per output: two products and a sum with cos/sin that differ by a few ulp
      // between CUDA's sincosf and the host's: K = 8 covers it.
      expect_close_to_reference(got, ref, dt, 8, what + " forward");
      expect_close_to_reference(xd.grad(), xr.grad(), dt, 8, what + " backward");
    }
  }
}

}  // namespace
