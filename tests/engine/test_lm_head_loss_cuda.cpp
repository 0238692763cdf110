// The fused lm_head cross-entropy on CUDA (engine/cuda/lm_head_loss.cpp) at
// Llama-like proportions scaled down (N = 300 tokens, H = 64, V = 1000, 20% of the
// targets ignored), against the CPU reference; its peak memory against the
// materialised logits; determinism; the no-counted-row case.
//
// Inputs are rounded through the tested dtype on the host, so both sides see the same
// values. Per element the GPU may differ from the fp32 reference by (u = 2^-24,
// u_acc = 2^-23 for fp32 sums on tensor cores, u_out = 2^-8 for bf16 outputs or u):
//   logits  |dz_nv| <= H u_acc A_nv,  A_nv = sum_p |h_np W_vp|
//   lse     e_n = H u_acc max_v A_nv + 4 (V + 64) u (1 + |lse_n|): the logits' error plus
//           fp32 running sums of V exponentials (expf 2 ulp, rescale factors per merge)
//   loss    mean over counted rows of 2 e_n (lse and z_t), + u_out |loss|
//   D_nv    = c (p_nv - [v == t_n]): |dD_nv| <= (2 e_n + 4 u) c p_nv + 2 u |D_nv|, and the
//           bf16 hi + lo split adds 2^-16 |D_nv| (bf16 only)
//   dh_nj   sum_v |dD_nv| |W_vj| + V u_acc sum_v |D_nv||W_vj| + u_out |dh_nj|
//   dW_vj   sum_n |dD_nv| |h_nj| + N u_acc sum_n |D_nv||h_nj| + u_out |dW_vj|
// Each bound is evaluated per element from the actual values (in double).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"

using engine::Device;
using engine::DType;
using engine::Tensor;

namespace {

constexpr int64_t kN = 300, kH = 64, kV = 1000;
constexpr double kU = 1.0 / (1 << 24), kUAcc = 1.0 / (1 << 23);

struct Inputs {
  Tensor h, w, t;  // host: h, w f32 holding values of the tested dtype; t i32
};

Inputs make_inputs(DType dtype, uint64_t seed) {
  engine::Generator gen(seed);
  Inputs in;
  in.h = engine::uniform({kN, kH}, -1.0f, 1.0f, gen).to_dtype(dtype).to_dtype(DType::F32);
  in.w = engine::uniform({kV, kH}, -0.5f, 0.5f, gen).to_dtype(dtype).to_dtype(DType::F32);
  std::vector<float> u = engine::uniform({kN}, 0.0f, 1.0f, gen).to_floats();
  std::vector<int32_t> t(kN);
  for (int64_t i = 0; i < kN; ++i)
    t[i] = u[i] < 0.2f ? -100 : static_cast<int32_t>((u[i] - 0.2f) / 0.8f * kV) % kV;
  in.t = Tensor::from_ints(t, {kN});
  return in;
}

struct Result {
  float loss;
  std::vector<float> dh, dw;
};

Result run(const Inputs& in, Device device, DType dtype, int64_t chunk_rows, float dloss) {
  const bool gpu = device.is_cuda();
  Tensor h = (gpu ? in.h.to_dtype(dtype).to(device) : in.h.clone()).set_requires_grad(true);
  Tensor w = (gpu ? in.w.to_dtype(dtype).to(device) : in.w.clone()).set_requires_grad(true);
  Tensor loss = engine::ops::lm_head_cross_entropy(h, w, in.t.to(device), -100, chunk_rows);
  Tensor seed = Tensor::full({}, dloss).to_dtype(gpu ? dtype : DType::F32).to(device);
  engine::backward({loss}, {seed});
  return {loss.item(), h.grad().to_floats(), w.grad().to_floats()};
}

using testing_support::expect_within;

class LmHeadLossCuda : public testing::TestWithParam<DType> {};

TEST_P(LmHeadLossCuda, MatchesCpuWithinDerivedBounds) {
  SKIP_WITHOUT_GPU();
  const DType dtype = GetParam();
  const double u_out = dtype == DType::BF16 ? 1.0 / 256 : kU;
  const double split = dtype == DType::BF16 ? 1.0 / 65536 : 0.0;
  const Inputs in = make_inputs(dtype, 5);
  const float dloss = 1.5f;  // exact in bf16
  const Result ref = run(in, Device::cpu(), DType::F32, 0, dloss);

  // Per-element bounds from the reference values (double).
  const std::vector<float> h = in.h.to_floats(), w = in.w.to_floats();
  const std::vector<int32_t> t = in.t.to_ints();
  int64_t count = 0;
  for (int32_t x : t) count += x != -100;
  const double coef = dloss / double(count);
  std::vector<double> d(kN * kV, 0.0), dd(kN * kV, 0.0);  // D and its error bound
  double loss_bound = 0;
  for (int64_t n = 0; n < kN; ++n) {
    if (t[n] == -100) continue;
    std::vector<double> z(kV);
    double amax = 0, m = -INFINITY, s = 0;
    for (int64_t v = 0; v < kV; ++v) {
      double dot = 0, a = 0;
      for (int64_t p = 0; p < kH; ++p) {
        dot += double(h[n * kH + p]) * w[v * kH + p];
        a += std::fabs(double(h[n * kH + p]) * w[v * kH + p]);
      }
      z[v] = dot;
      amax = std::max(amax, a);
      m = std::max(m, dot);
    }
    for (double x : z) s += std::exp(x - m);
    const double lse = m + std::log(s);
    const double e = kH * kUAcc * amax + 4.0 * (kV + 64) * kU * (1 + std::fabs(lse));
    loss_bound += 2 * e / double(count);
    for (int64_t v = 0; v < kV; ++v) {
      const double p = std::exp(z[v] - lse);
      d[n * kV + v] = coef * (p - (v == t[n] ? 1.0 : 0.0));
      dd[n * kV + v] = (2 * e + 4 * kU) * coef * p + (2 * kU + split) * std::fabs(d[n * kV + v]);
    }
  }
  std::vector<double> dh_bound(kN * kH, 0.0), dw_bound(kV * kH, 0.0);
  for (int64_t n = 0; n < kN; ++n)
    for (int64_t v = 0; v < kV; ++v) {
      const double ad = std::fabs(d[n * kV + v]), err = dd[n * kV + v];
      if (ad == 0 && err == 0) continue;
      for (int64_t p = 0; p < kH; ++p) {
        dh_bound[n * kH + p] += (err + kV * kUAcc * ad) * std::fabs(w[v * kH + p]);
        dw_bound[v * kH + p] += (err + kN * kUAcc * ad) * std::fabs(h[n * kH + p]);
      }
    }

  // The final rounding of each output.
  for (size_t i = 0; i < dh_bound.size(); ++i) dh_bound[i] += u_out * std::fabs(ref.dh[i]);
  for (size_t i = 0; i < dw_bound.size(); ++i) dw_bound[i] += u_out * std::fabs(ref.dw[i]);
  for (int64_t chunk : {0, 7, 300}) {
    SCOPED_TRACE("chunk_rows " + std::to_string(chunk));
    const Result got = run(in, Device::cuda(), dtype, chunk, dloss);
    EXPECT_NEAR(got.loss, ref.loss, loss_bound + u_out * std::fabs(ref.loss));
    expect_within(got.dh, ref.dh, dh_bound, "dh");
    expect_within(got.dw, ref.dw, dw_bound, "dW");
  }
}

TEST_P(LmHeadLossCuda, IsDeterministic) {
  SKIP_WITHOUT_GPU();
  const Inputs in = make_inputs(GetParam(), 6);
  const Result a = run(in, Device::cuda(), GetParam(), 0, 1.0f);
  const Result b = run(in, Device::cuda(), GetParam(), 0, 1.0f);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.dh, b.dh);
  EXPECT_EQ(a.dw, b.dw);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, LmHeadLossCuda, testing::Values(DType::F32, DType::BF16),
                         [](const testing::TestParamInfo<DType>& i) {
                           return std::string(engine::dtype_name(i.param));
                         });

// The QLoRA case (frozen lm_head, bf16): during forward + backward the op holds at most
// 1/20 of the materialised bf16 logits [N, V] beyond its inputs and its outputs (the
// loss and dh). The op is called through the registry directly, so autograd's copy of
// the leaf gradient is not part of the measurement.
TEST(LmHeadLossCudaMemory, PeakIsBelowATwentiethOfTheLogits) {
  SKIP_WITHOUT_GPU();
  const Inputs in = make_inputs(DType::BF16, 7);
  const Device gpu = Device::cuda();
  const std::vector<Tensor> inputs = {in.h.to_dtype(DType::BF16).to(gpu),
                                      in.w.to_dtype(DType::BF16).to(gpu), in.t.to(gpu)};
  const Tensor seed = Tensor::full({}, 1.0f).to_dtype(DType::BF16).to(gpu);
  const engine::OpDef& def = engine::op_def(engine::OpId::LmHeadCrossEntropy);
  auto pass = [&](size_t* outputs_bytes) {
    engine::OpContext ctx;
    ctx.needs_grad = {true, false, false};
    for (const Tensor& x : inputs) ctx.input_shapes.push_back(x.shape());
    std::vector<Tensor> out = def.cuda.forward(ctx, inputs);
    std::vector<Tensor> grads = def.cuda.backward(ctx, {seed});
    engine::backend::synchronize(gpu);
    EXPECT_FALSE(grads[1].defined());
    if (outputs_bytes) *outputs_bytes = out[0].nbytes() + grads[0].nbytes();
  };
  pass(nullptr);  // warm-up: the cuBLASLt workspace and handle are created once
  engine::Allocator& alloc = engine::allocator_for(gpu);
  const size_t base = alloc.stats().in_use;
  alloc.reset_peak();
  size_t outputs = 0;
  pass(&outputs);
  const size_t extra = alloc.stats().peak - base - outputs;
  const size_t logits = size_t(kN) * kV * 2;
  EXPECT_LE(extra * 20, logits) << "scratch peak " << extra << " B vs logits " << logits << " B";
  EXPECT_EQ(alloc.stats().in_use, base) << "the op leaked device memory";
}

TEST(LmHeadLossCudaEdges, NoCountedRowGivesZeros) {
  SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda();
  engine::Generator gen(1);
  Tensor h = engine::uniform({3, 8}, -1.0f, 1.0f, gen).to_dtype(DType::BF16).to(gpu).set_requires_grad(true);
  Tensor w = engine::uniform({5, 8}, -1.0f, 1.0f, gen).to_dtype(DType::BF16).to(gpu).set_requires_grad(true);
  Tensor loss = engine::ops::lm_head_cross_entropy(h, w, Tensor::from_ints({-100, -100, -100}, {3}).to(gpu));
  EXPECT_EQ(loss.item(), 0.0f);
  engine::backward({loss}, {Tensor::full({}, 1.0f).to_dtype(DType::BF16).to(gpu)});
  for (float x : h.grad().to_floats()) EXPECT_EQ(x, 0.0f);
  for (float x : w.grad().to_floats()) EXPECT_EQ(x, 0.0f);
}

}  // namespace
