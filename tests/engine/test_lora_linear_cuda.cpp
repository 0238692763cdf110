// The QLoRA linear op on CUDA (engine/cuda/lora_linear.cpp) with an NF4 frozen weight,
// against the CPU reference on the same NF4 weight: bf16 x and dy, fp32 LoRA masters,
// at 16 rows (the direct-kernel path when the NF4 weight has one) and 200 rows (the
// dequantize-into-a-workspace path), with and without dropout. Device outputs start
// NaN-poisoned. A second test checks that forward + backward give every workspace
// back to the caching allocator.
//
// Inputs are exactly representable where the GPU rounds them: x, dy are bf16 values,
// and the fp32 masters A, B hold bf16 values (so converting them for the GEMMs is
// exact). The reference runs in fp32 with the fp32 dequantized W. Per output element
// the GPU differs from it by at most (u = 2^-8 for bf16, u_acc = 2^-23: tensor-core
// adders may truncate; K = in + out + rows + r bounds every reduction length):
//   W       the GEMMs use W rounded to bf16 (or, in a direct kernel, anything between
//           W and bf16(W)): |x| dW^T for y, |dy| dW for dx, dW = |bf16(W) - W| exactly.
//   t, g_b  the [n, r] intermediates t = d(x) A^T and g_b = dy B are stored in bf16: one
//           relative rounding each, propagated through the next product:
//           y: u s |t| |B|^T;  dx: u s d'(|g_b| |A|);  dA: u s |g_b|^T |d(x)|;  dB: u s |dy|^T |t|.
//   staged  a term stored in bf16 before the last GEMM adds it (beta = 1): y's LoRA term
//           u |s t B^T| (or, on the direct path, the base u |x W^T|); dx's LoRA term
//           u |s d'(g_b A)|.
//   sums    fp32 accumulation of every product: K u_acc times the sum of the absolute
//           products (the same expression on |x|, |W|, |A|, |B|, |dy|).
//   output  one final rounding, u_out |ref| (bf16 for y, dx; f32 for dA, dB).
// Everything except the final rounding is computed per element on the CPU from the
// actual values, so the bound is worst-case yet tight enough to catch a missing LoRA
// term (whose size is printed next to the bound on failure).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/frozen_linear.h"
#include "engine/ops.h"
#include "engine/quant/nf4_linear.h"
#include "engine/rng.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"

using engine::Device;
using engine::DType;
using engine::Shape;
using engine::Tensor;
namespace ops = engine::ops;

namespace {

constexpr int64_t kIn = 256, kOut = 192, kRank = 8;
constexpr float kScaling = 2.0f;
constexpr double kU = 1.0 / 256, kUAcc = 1.0 / (1 << 23), kUF32 = 1.0 / (1 << 24);

Tensor bf16_values(const Tensor& t) { return t.to_dtype(DType::BF16).to_dtype(DType::F32); }

Tensor map(const Tensor& t, float (*f)(float)) {
  std::vector<float> v = t.to_floats();
  for (float& e : v) e = f(e);
  return Tensor::from_floats(v, t.shape());
}
float abs_f(float v) { return std::fabs(v); }

struct Problem {
  Shape x_shape;
  ops::LoraDropout drop;
  std::shared_ptr<engine::quant::Nf4FrozenLinear> w_nf4;  // on the CPU
  Tensor w, x, a, b, dy;                                   // host f32
};

Problem make_problem(Shape x_shape, float p, uint64_t seed) {
  engine::Generator gen(seed);
  Problem pr{x_shape, {p, seed * 7 + 1, 1000}, nullptr, {}, {}, {}, {}, {}};
  pr.w_nf4 = engine::quant::Nf4FrozenLinear::quantize(engine::uniform({kOut, kIn}, -1, 1, gen));
  pr.w = pr.w_nf4->dequantize(DType::F32, Device::cpu());
  pr.x = bf16_values(engine::uniform(x_shape, -1, 1, gen));
  const float bound = 1.0f / std::sqrt(static_cast<float>(kIn));  // PEFT's A init
  pr.a = bf16_values(engine::uniform({kRank, kIn}, -bound, bound, gen));
  pr.b = bf16_values(engine::uniform({kOut, kRank}, -1, 1, gen));  // random, not zeros
  pr.dy = bf16_values(engine::uniform(x_shape.with(-1, kOut), -1, 1, gen));
  return pr;
}

struct Outputs {
  Tensor y, dx, da, db;  // host f32
};

Outputs run_cpu(const Problem& pr) {
  Tensor x = pr.x.clone().set_requires_grad(), a = pr.a.clone().set_requires_grad();
  Tensor b = pr.b.clone().set_requires_grad();
  Tensor y = ops::lora_linear(x, pr.w_nf4, a, b, kScaling, pr.drop);
  engine::backward({y}, {pr.dy});
  return {y.detach(), x.grad(), a.grad(), b.grad()};
}

Outputs run_cuda(const Problem& pr, std::shared_ptr<const engine::FrozenLinear> w_gpu) {
  const Device gpu = Device::cuda();
  Tensor x = pr.x.to_dtype(DType::BF16).to(gpu).set_requires_grad();
  Tensor a = pr.a.to(gpu).set_requires_grad(), b = pr.b.to(gpu).set_requires_grad();  // fp32
  const size_t poison = 4 * static_cast<size_t>(pr.x.numel() + pr.dy.numel() + kOut * kIn) + 4096;
  testing_support::poison_device_pool(poison);
  Tensor y = ops::lora_linear(x, w_gpu, a, b, kScaling, pr.drop);
  EXPECT_EQ(y.dtype(), DType::BF16);
  testing_support::poison_device_pool(poison);
  engine::backward({y}, {pr.dy.to_dtype(DType::BF16).to(gpu)});
  EXPECT_EQ(x.grad().dtype(), DType::BF16);
  EXPECT_EQ(a.grad().dtype(), DType::F32);
  EXPECT_EQ(b.grad().dtype(), DType::F32);
  auto host = [](const Tensor& t) { return t.to(Device::cpu()).to_dtype(DType::F32); };
  return {host(y), host(x.grad()), host(a.grad()), host(b.grad())};
}

// Per-element bounds of |cuda - cpu| before the final rounding, and the LoRA part of
// each output (for the failure message), from the derivation in the header.
struct Bounds {
  Tensor y, dx, da, db, lora_y, lora_dx;
};

Bounds bounds(const Problem& pr) {
  engine::NoGradGuard no_grad;
  const int64_t n = pr.x_shape.rows();
  const double k_sum = static_cast<double>(kIn + kOut + n + kRank) * kUAcc;
  auto mm = [](const Tensor& p, const Tensor& q, bool tp, bool tq) { return ops::matmul(p, q, tp, tq); };
  auto drop = [&](const Tensor& t) {
    return pr.drop.p > 0 ? ops::dropout(t, pr.drop.p, pr.drop.seed, pr.drop.offset) : t;
  };
  auto sum = [](std::initializer_list<std::pair<double, Tensor>> terms) {
    Tensor acc;
    for (const auto& [c, t] : terms) {
      Tensor s = ops::scale(t, static_cast<float>(c));
      acc = acc.defined() ? ops::add(acc, s) : s;
    }
    return acc;
  };
  const Tensor x = pr.x.view({n, kIn}), dy = pr.dy.view({n, kOut});
  const Tensor ax = map(x, abs_f), aw = map(pr.w, abs_f), aa = map(pr.a, abs_f);
  const Tensor ab = map(pr.b, abs_f), ady = map(dy, abs_f);
  const Tensor dw = map(ops::add(bf16_values(pr.w), ops::scale(pr.w, -1.0f)), abs_f);
  const Tensor xd = drop(x), axd = map(xd, abs_f);  // d(x), |d(x)| = d(|x|)
  const Tensor t = mm(xd, pr.a, false, true), g_b = mm(dy, pr.b, false, false);
  const Tensor at = map(t, abs_f), agb = map(g_b, abs_f);
  const double s = kScaling;

  Bounds out;
  out.lora_y = ops::scale(mm(t, pr.b, false, true), kScaling);
  out.lora_dx = ops::scale(drop(mm(g_b, pr.a, false, false)), kScaling);
  const Tensor base_y = mm(x, pr.w, false, true);
  out.y = sum({{1, mm(ax, dw, false, true)},
               {kU * s, mm(at, ab, false, true)},
               {kU, map(out.lora_y, abs_f)},
               {kU, map(base_y, abs_f)},
               {k_sum, mm(ax, aw, false, true)},
               {k_sum * s, mm(mm(axd, aa, false, true), ab, false, true)}});
  out.dx = sum({{1, mm(ady, dw, false, false)},
                {kU * s, drop(mm(agb, aa, false, false))},
                {kU, map(out.lora_dx, abs_f)},
                {k_sum, mm(ady, aw, false, false)},
                {k_sum * s, drop(mm(mm(ady, ab, false, false), aa, false, false))}});
  out.da = sum({{kU * s, mm(agb, axd, true, false)},
                {k_sum * s, mm(mm(ady, ab, false, false), axd, true, false)}});
  out.db = sum({{kU * s, mm(ady, at, true, false)},
                {k_sum * s, mm(ady, mm(axd, aa, false, true), true, false)}});
  return out;
}

// Per element (1 + u_out) (u_out |ref| + b): the final rounding of a value within b of ref.
void expect_within_bound(const Tensor& got, const Tensor& ref, const Tensor& bound,
                         const Tensor& lora, double u_out, const std::string& what) {
  const std::vector<float> r = ref.to_floats(), b = bound.to_floats();
  const std::vector<float> l = lora.defined() ? lora.to_floats() : std::vector<float>(r.size(), 0);
  std::vector<double> tol(r.size());
  for (size_t i = 0; i < r.size(); ++i) tol[i] = (1 + u_out) * (u_out * std::fabs(r[i]) + b[i]);
  testing_support::expect_within(got.to_floats(), r, tol, what, [&](size_t i) {
    return " (LoRA term there: " + std::to_string(l[i]) + ")";
  });
}

struct Case {
  Shape x_shape;
  float p;
};

class LoraLinearNf4Cuda : public testing::TestWithParam<Case> {};

TEST_P(LoraLinearNf4Cuda, MatchesCpuReferenceOnTheSameNf4Weight) {
  SKIP_WITHOUT_GPU();
  const Case c = GetParam();
  const Problem pr = make_problem(c.x_shape, c.p, 17 + c.x_shape.rows());
  std::shared_ptr<const engine::FrozenLinear> w_gpu = pr.w_nf4->to(Device::cuda());
  ASSERT_TRUE(w_gpu->device().is_cuda());
  {
    const Tensor probe = w_gpu->matmul_direct(pr.x.view({c.x_shape.rows(), kIn})
                                                  .to_dtype(DType::BF16)
                                                  .to(Device::cuda()));
    RecordProperty("direct_kernel", probe.defined() ? "yes" : "no");
  }
  const Outputs ref = run_cpu(pr), got = run_cuda(pr, w_gpu);
  const Bounds bd = bounds(pr);
  expect_within_bound(got.y, ref.y, bd.y, bd.lora_y, kU, "y");
  expect_within_bound(got.dx, ref.dx, bd.dx, bd.lora_dx, kU, "dx");
  expect_within_bound(got.da, ref.da, bd.da, Tensor(), kUF32, "dA");
  expect_within_bound(got.db, ref.db, bd.db, Tensor(), kUF32, "dB");
}

std::string case_name(const testing::TestParamInfo<Case>& param) {
  return "rows" + std::to_string(param.param.x_shape.rows()) +
         (param.param.p > 0 ? "_dropout" : "_nodropout");
}

INSTANTIATE_TEST_SUITE_P(Rows, LoraLinearNf4Cuda,
                         testing::Values(Case{Shape{16, kIn}, 0.0f}, Case{Shape{16, kIn}, 0.1f},
                                         Case{Shape{200, kIn}, 0.0f},
                                         Case{Shape{2, 100, kIn}, 0.1f}),
                         case_name);

// After a warm-up call (which creates the cuBLASLt workspace and any lazily made
// state), forward + backward + dropping the results returns in_use to where it was:
// the dequantized weight, the masks and every intermediate went back to the pool.
TEST(LoraLinearCuda, ForwardBackwardReleasesEveryWorkspace) {
  SKIP_WITHOUT_GPU();
  for (int64_t rows : {16, 200}) {
    SCOPED_TRACE("rows " + std::to_string(rows));
    const Problem pr = make_problem(Shape{rows, kIn}, 0.1f, 5);
    std::shared_ptr<const engine::FrozenLinear> w_gpu = pr.w_nf4->to(Device::cuda());
    const Device gpu = Device::cuda();
    Tensor x = pr.x.to_dtype(DType::BF16).to(gpu).set_requires_grad();
    Tensor a = pr.a.to(gpu).set_requires_grad(), b = pr.b.to(gpu).set_requires_grad();
    const Tensor dy = pr.dy.to_dtype(DType::BF16).to(gpu);
    auto step = [&] {
      Tensor y = ops::lora_linear(x, w_gpu, a, b, kScaling, pr.drop);
      engine::backward({y}, {dy});
      engine::backend::synchronize(gpu);
      x.zero_grad();
      a.zero_grad();
      b.zero_grad();
    };
    engine::Allocator& pool = engine::allocator_for(gpu);
    step();
    const size_t before = pool.stats().in_use;
    step();
    EXPECT_EQ(pool.stats().in_use, before);
  }
}

}  // namespace
