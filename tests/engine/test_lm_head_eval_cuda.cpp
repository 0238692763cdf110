// The lm_head evaluation statistics on CUDA (engine/cuda/lm_head_eval.cpp) against the
// CPU reference (engine/cpu/lm_head_eval.cpp), f32 and bf16, outputs poisoned first.
// Shapes force several row chunks and vocab blocks (kernels::plan_lm_head_tiling picks 16
// rows by 96 entries here), and rows 16..31 are all ignored: a skipped chunk.
//
// Inputs are rounded through the tested dtype on the host, so both sides see the same
// values. Bounds (u = 2^-24, u_acc = 2^-23 for fp32 sums on tensor cores), from
// tests/engine/test_lm_head_loss_cuda.cpp:
//   logits  |dz_nv| <= H u_acc A_nv,  A_nv = sum_p |h_np W_vp|
//   lse     e_n = H u_acc max_v A_nv + 4 (V + 64) u (1 + |lse_n|)
//   loss_n  2 e_n (lse and z_t) + u |loss_n|
//   argmax  equal to the CPU's, or a near tie: z_cpu[gpu pick] >= z_cpu[cpu pick] - 2 H u_acc
//           max_v A_nv. Rows 8..12 tie exactly (identical W rows 5, 300 and 650, in three
//           vocab blocks, clearly above the rest): the first index, 5, must win.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/lm_head_eval.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "tests/support/gpu.h"

using engine::Device;
using engine::DType;
using engine::Tensor;

namespace {

constexpr int64_t kN = 67, kH = 32, kV = 700;
constexpr double kU = 1.0 / (1 << 24), kUAcc = 1.0 / (1 << 23);

struct Inputs {
  Tensor h, w, t;  // host f32 holding values of the tested dtype; t i32
};

Inputs make_inputs(DType dtype, uint64_t seed) {
  engine::Generator gen(seed);
  std::vector<float> h = engine::uniform({kN, kH}, -1.0f, 1.0f, gen).to_floats();
  std::vector<float> w = engine::uniform({kV, kH}, -0.5f, 0.5f, gen).to_floats();
  std::vector<float> u = engine::uniform({kN}, 0.0f, 1.0f, gen).to_floats();
  for (int64_t v : {5, 300, 650})
    for (int64_t p = 0; p < kH; ++p) w[v * kH + p] = 0.75f;
  for (int64_t n = 8; n < 13; ++n)
    for (int64_t p = 0; p < kH; ++p) h[n * kH + p] = 0.5f;
  std::vector<int32_t> t(kN);
  for (int64_t n = 0; n < kN; ++n) {
    const bool ignored = (n >= 16 && n < 32) || (u[n] < 0.2f && (n < 8 || n >= 13));
    t[n] = ignored ? -100 : static_cast<int32_t>(u[n] * 7919) % kV;
  }
  Inputs in;
  in.h = Tensor::from_floats(h, {kN, kH}).to_dtype(dtype).to_dtype(DType::F32);
  in.w = Tensor::from_floats(w, {kV, kH}).to_dtype(dtype).to_dtype(DType::F32);
  in.t = Tensor::from_ints(t, {kN});
  return in;
}

class LmHeadEvalCuda : public testing::TestWithParam<DType> {};

TEST_P(LmHeadEvalCuda, MatchesCpuWithinDerivedBounds) {
  SKIP_WITHOUT_GPU();
  const DType dtype = GetParam();
  const Inputs in = make_inputs(dtype, 11);
  const engine::LmHeadEval ref = engine::lm_head_eval(in.h, in.w, in.t);
  const std::vector<float> ref_loss = ref.loss.to_floats();
  const std::vector<int32_t> ref_arg = ref.argmax.to_ints();
  const std::vector<float> z = engine::ops::matmul(in.h, in.w, false, true).to_floats();
  const std::vector<float> h = in.h.to_floats(), w = in.w.to_floats();
  const std::vector<int32_t> t = in.t.to_ints();
  std::vector<double> logit_err(kN, 0.0), loss_tol(kN, 0.0);
  for (int64_t n = 0; n < kN; ++n) {
    if (t[n] == -100) continue;
    double amax = 0, m = -INFINITY, s = 0;
    for (int64_t v = 0; v < kV; ++v) {
      double a = 0;
      for (int64_t p = 0; p < kH; ++p) a += std::fabs(double(h[n * kH + p]) * w[v * kH + p]);
      amax = std::max(amax, a);
      m = std::max(m, double(z[n * kV + v]));
    }
    for (int64_t v = 0; v < kV; ++v) s += std::exp(double(z[n * kV + v]) - m);
    const double lse = m + std::log(s);
    logit_err[n] = kH * kUAcc * amax;
    loss_tol[n] = 2 * (logit_err[n] + 4.0 * (kV + 64) * kU * (1 + std::fabs(lse))) +
                  kU * std::fabs(ref_loss[n]);
  }
  const Device gpu = Device::cuda();
  for (int64_t chunk : {int64_t(0), int64_t(7), kN}) {
    SCOPED_TRACE("chunk_rows " + std::to_string(chunk));
    testing_support::poison_device_pool(size_t(1) << 20);
    const engine::LmHeadEval got = engine::lm_head_eval(in.h.to_dtype(dtype).to(gpu),
                                                        in.w.to_dtype(dtype).to(gpu), in.t.to(gpu), -100, chunk);
    ASSERT_EQ(got.loss.dtype(), DType::F32);
    ASSERT_EQ(got.argmax.dtype(), DType::I32);
    const std::vector<float> loss = got.loss.to_floats();
    const std::vector<int32_t> arg = got.argmax.to_ints();
    for (int64_t n = 0; n < kN; ++n) {
      if (t[n] == -100) {
        EXPECT_EQ(loss[n], 0.0f) << "ignored row " << n;
        EXPECT_EQ(arg[n], -1) << "ignored row " << n;
        continue;
      }
      EXPECT_NEAR(loss[n], ref_loss[n], loss_tol[n]) << "row " << n;
      ASSERT_GE(arg[n], 0) << "row " << n;
      ASSERT_LT(arg[n], kV) << "row " << n;
      if (arg[n] != ref_arg[n]) {
        EXPECT_GE(z[n * kV + arg[n]], z[n * kV + ref_arg[n]] - 2 * logit_err[n])
            << "row " << n << ": " << arg[n] << " is no near tie of " << ref_arg[n];
      }
    }
    for (int64_t n = 8; n < 13; ++n) EXPECT_EQ(arg[n], 5) << "tied row " << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, LmHeadEvalCuda, testing::Values(DType::F32, DType::BF16),
                         [](const testing::TestParamInfo<DType>& i) {
                           return std::string(engine::dtype_name(i.param));
                         });

}  // namespace
