// The fused CUDA AdamW (kernels/adamw.cu) against the CPU optimizer: bitwise equal.
//
// Why bitwise and not a tolerance: both run kmath::adamw_update (kernels/math/adamw.h)
// in the same operation order, every operation a single IEEE-rounded fp32 op (the
// device through __fmul_rn/__fadd_rn/__fsub_rn/__fdiv_rn/__fsqrt_rn, which nvcc never
// contracts into FMAs; the host in a -ffp-contract=off translation unit), with the same
// per-step scalars computed once on the host. IEEE operations are deterministic, so
// parameters and both moments must agree to the bit after every step.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "engine/optim/adamw.h"
#include "engine/rng.h"
#include "kernels/math/bf16.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"
#if ENGINE_WITH_CUDA
#include "engine/cuda/runtime.h"
#include "kernels/adamw.h"
#endif

namespace {

using engine::Device;
using engine::DType;
using engine::Shape;
using engine::Tensor;

using testing_support::expect_bitwise;

TEST(AdamWCuda, FusedStepIsBitwiseTheCpuOptimizer) {
  SKIP_WITHOUT_GPU();
  // Odd sizes: single elements, float4 tails, several 8192-element chunks per tensor.
  const std::vector<Shape> shapes = {{1}, {7}, {33}, {4, 1000}, {4099}, {3, 5, 7}, {16, 8193}, {5}};
  const engine::optim::AdamWConfig cfg{.lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f,
                                       .weight_decay = 0.1f};
  engine::Generator gen(42);
  std::vector<Tensor> cpu, gpu;
  for (const Shape& s : shapes) {
    Tensor p = engine::uniform(s, -1.0f, 1.0f, gen);
    cpu.push_back(p);
    gpu.push_back(p.to(Device::cuda()));
  }
  engine::optim::AdamW cpu_opt(cpu, cfg), gpu_opt(gpu, cfg);
  for (int step = 1; step <= 3; ++step) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      if (i == shapes.size() - 1) continue;  // the last parameter never has a gradient
      Tensor g = engine::uniform(shapes[i], -2.0f, 2.0f, gen);
      cpu[i].set_grad(g);
      gpu[i].set_grad(g.to(Device::cuda()));
    }
    cpu_opt.step();
    gpu_opt.step();
    for (size_t i = 0; i < shapes.size(); ++i) {
      const std::string what = "step " + std::to_string(step) + " tensor " + shapes[i].str();
      expect_bitwise(gpu[i], cpu[i], what + " param");
      expect_bitwise(gpu_opt.first_moments()[i], cpu_opt.first_moments()[i], what + " m");
      expect_bitwise(gpu_opt.second_moments()[i], cpu_opt.second_moments()[i], what + " v");
    }
  }
  EXPECT_TRUE(gpu_opt.first_moments()[0].device().is_cuda());
}

// Buffers at odd float offsets take the element-by-element path; the launcher is
// called directly, against kmath::adamw_update on the host.
TEST(AdamWCuda, UnalignedTensorsMatchTheSharedMath) {
  SKIP_WITHOUT_GPU();
#if ENGINE_WITH_CUDA
  const int64_t n = 1001;
  engine::Generator gen(7);
  std::vector<float> p = engine::uniform({n + 1}, -1.0f, 1.0f, gen).to_floats();
  std::vector<float> g = engine::uniform({n + 1}, -1.0f, 1.0f, gen).to_floats();
  std::vector<float> m = engine::uniform({n + 1}, -0.1f, 0.1f, gen).to_floats();
  std::vector<float> v = engine::uniform({n + 1}, 0.0f, 0.01f, gen).to_floats();
  auto upload = [](const std::vector<float>& h) {
    return Tensor::from_floats(h, {static_cast<int64_t>(h.size())}).to(Device::cuda());
  };
  Tensor dp = upload(p), dg = upload(g), dm = upload(m), dv = upload(v);
  kmath::AdamWStep s;
  s.lr = 1e-3f;
  s.weight_decay = 0.01f;
  s.step_size = 1e-2f;
  s.bias2_sqrt = 0.05f;
  kernels::AdamWTensor t{static_cast<float*>(dp.raw_data()) + 1,
                         static_cast<const float*>(dg.raw_data()) + 1,
                         static_cast<float*>(dm.raw_data()) + 1,
                         static_cast<float*>(dv.raw_data()) + 1, n};
  Tensor ws = Tensor::empty({static_cast<int64_t>(kernels::adamw_workspace_bytes(1))}, DType::U8,
                            Device::cuda());
  kernels::adamw_step(&t, 1, s, ws.raw_data(), ws.nbytes(), engine::cuda::current_stream());
  for (int64_t j = 1; j <= n; ++j) kmath::adamw_update(p[j], g[j], m[j], v[j], s);
  expect_bitwise(dp.to_floats(), p, "param");
  expect_bitwise(dm.to_floats(), m, "m");
  expect_bitwise(dv.to_floats(), v, "v");
#endif
}

TEST(AdamWCuda, ClipGradNormScalesDeviceGradients) {
  SKIP_WITHOUT_GPU();
  Tensor a = Tensor::from_floats({3.0f}, {1}).to(Device::cuda());
  Tensor b = Tensor::from_floats({4.0f}, {1}).to(Device::cuda());
  a.set_grad(Tensor::from_floats({3.0f}, {1}).to(Device::cuda()));
  b.set_grad(Tensor::from_floats({4.0f}, {1}).to(Device::cuda()));
  EXPECT_FLOAT_EQ(engine::optim::clip_grad_norm({a, b}, 1.0f), 5.0f);
  EXPECT_NEAR(a.grad().item(), 0.6f, 1e-6);
  EXPECT_NEAR(b.grad().item(), 0.8f, 1e-6);
}

// Many tensors, f32 and bf16, sizes around the 8192-element chunks of the fused
// reduction: the norm agrees with a host double sum, repeats bitwise, and clipping
// scales every gradient by the same factor.
TEST(AdamWCuda, ClipGradNormOverManyTensorsMatchesTheHostSum) {
  SKIP_WITHOUT_GPU();
  engine::Generator gen(31);
  std::vector<Tensor> params;
  std::vector<std::vector<float>> host_grads;
  double sum = 0;
  int i = 0;
  for (int64_t n : {1, 8191, 8192, 8193, 20000, 3}) {
    const DType dt = i++ % 2 ? DType::BF16 : DType::F32;
    Tensor g = engine::uniform(Shape{n}, -1.0f, 1.0f, gen).to_dtype(dt);
    host_grads.push_back(g.to_floats());  // the values as stored (bf16-rounded)
    for (float x : host_grads.back()) sum += double(x) * x;
    Tensor p = Tensor::zeros(Shape{n}).to(Device::cuda());
    p.set_grad(g.to(Device::cuda()));
    params.push_back(p);
  }
  const float expected = static_cast<float>(std::sqrt(sum));
  const float unclipped = engine::optim::clip_grad_norm(params, 0.0f);  // 0: measure only
  // Both sums are of the same doubles in different orders: relative difference below
  // n * 2^-53, far under the 2^-24 of the final rounding to float; allow one float ulp.
  EXPECT_NEAR(unclipped, expected, expected * 0x1p-23f);
  EXPECT_EQ(engine::optim::clip_grad_norm(params, 0.0f), unclipped) << "not deterministic";

  const float max_norm = unclipped / 4;
  EXPECT_EQ(engine::optim::clip_grad_norm(params, max_norm), unclipped);
  const float factor = max_norm / (unclipped + 1e-6f);
  for (size_t t = 0; t < params.size(); ++t) {
    const Tensor& g = params[t].grad();
    const std::vector<float> got = g.to_floats();
    for (size_t j = 0; j < got.size(); ++j) {
      const float want = host_grads[t][j] * factor;  // one fp32 rounding, then bf16's
      const float stored = g.dtype() == DType::BF16
                               ? kmath::bf16_bits_to_float(kmath::float_to_bf16_bits(want))
                               : want;
      ASSERT_EQ(got[j], stored) << "tensor " << t << " element " << j;
    }
  }
}

}  // namespace
