// Every registry op with a CUDA implementation, every case, in f32 and bf16: the
// CUDA forward and backward against the CPU reference on fresh random inputs.
//
// bf16 inputs are rounded on the host first, so both sides see identical values;
// the CPU reference then runs in f32. Per element the allowed difference is
//   u_out |ref| + 2 K u_f32 (|ref| + rms ref)
// (u_out: unit roundoff of the output type, 2^-8 for bf16 and 2^-24 for f32, for the
// final rounding; K u_f32: fp32 accumulation of length K in either order).
// Cases whose CUDA path adds error terms of its own in bf16 declare them
// (OpCase::bf16_accumulation, bf16_roundings; tests/support/op_cases.h); those never
// loosen the CPU gradient check. The device memory pool is poisoned with NaN first, so
// an output element the kernel forgets to write shows up as NaN and fails. (Attention in f32 runs the
// fp32 fallback kernels of kernels/attention_fallback.cu; bf16 runs the tensor-core
// path, also covered at larger sizes by test_attention_cuda.cpp.)
#include <gtest/gtest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/rng.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"
#include "tests/support/op_cases.h"

using engine::DType;
using engine::OpId;
using engine::Tensor;

namespace {

constexpr uint64_t kSeed = 99;

std::vector<OpId> cuda_op_ids() {
  std::vector<OpId> ids;
  for (const engine::OpDef& def : engine::all_ops())
    if (def.cuda.exists()) ids.push_back(def.id);
  if (ids.empty()) ids.push_back(OpId::Add);  // CPU-only build: the test skips
  return ids;
}

Tensor to_device(const Tensor& host, DType dtype) {
  if (host.dtype() == DType::I32) return host.to(engine::Device::cuda());
  return host.to_dtype(dtype).to(engine::Device::cuda());
}

// The host tensor as the device sees it (values rounded through `dtype`).
Tensor as_seen(const Tensor& host, DType dtype) {
  if (host.dtype() == DType::I32) return host.clone();
  return host.to_dtype(dtype).to_dtype(DType::F32);
}

Tensor abs_of(const Tensor& t) {
  if (t.dtype() == DType::I32) return t.clone();
  std::vector<float> v = t.to_floats();
  for (float& x : v) x = std::fabs(x);
  return Tensor::from_floats(v, t.shape());
}

using testing_support::expect_close_to_reference;

// The bound of a case whose CUDA path rounds intermediates to bf16 (OpCase::bf16_roundings
// R): per element (1 + u_out) (u_out |ref| + (R u_bf16 + 2 K u_f32) T), T the sum of the
// absolute products behind the element (the op on absolute values).
void expect_within_terms(const Tensor& got, const Tensor& ref, const Tensor& terms, int roundings,
                         int64_t k, const std::string& what) {
  const double u_out = testing_support::unit_roundoff(got.dtype());
  const double per_term = roundings * testing_support::kUnitRoundoffBF16 +
                          2.0 * double(k) * testing_support::kUnitRoundoffF32;
  const std::vector<float> r = ref.to_floats(), t = terms.to_floats();
  std::vector<double> tol(r.size());
  for (size_t i = 0; i < r.size(); ++i)
    tol[i] = (1 + u_out) * (u_out * std::fabs(r[i]) + per_term * t[i]);
  testing_support::expect_within(got.to_floats(), r, tol, what);
}

class OpCudaParity : public testing::TestWithParam<std::tuple<OpId, DType>> {};

TEST_P(OpCudaParity, ForwardAndBackwardMatchCpu) {
  SKIP_WITHOUT_GPU();
  auto [id, dtype] = GetParam();
  engine::Generator gen(kSeed + 1);
  for (const auto& c : testing_support::op_cases(id, kSeed)) {
    const bool bf16 = dtype == DType::BF16;
    const int64_t k = c.accumulation + (bf16 ? c.bf16_accumulation : 0);
    const int roundings = bf16 ? c.bf16_roundings : 0;
    std::vector<Tensor> cpu_in, gpu_in, abs_in;
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      cpu_in.push_back(as_seen(c.inputs[i], dtype).set_requires_grad(c.differentiable[i]));
      gpu_in.push_back(to_device(c.inputs[i], dtype).set_requires_grad(c.differentiable[i]));
      abs_in.push_back(abs_of(cpu_in.back()).set_requires_grad(c.differentiable[i]));
    }
    Tensor ref = engine::call_op(id, cpu_in, c.attrs)[0];
    Tensor terms = roundings ? engine::call_op(id, abs_in, c.abs_attrs)[0] : Tensor();
    testing_support::poison_device_pool(4 * ref.nbytes() + 1024);
    Tensor out = engine::call_op(id, gpu_in, c.attrs)[0];
    EXPECT_EQ(out.shape(), ref.shape()) << c.label;
    auto expect_close = [&](const Tensor& got, const Tensor& want, const Tensor& t,
                            const std::string& what) {
      if (roundings) expect_within_terms(got, want, t, roundings, k, c.label + what);
      else expect_close_to_reference(got, want, dtype, k, c.label + what);
    };
    expect_close(out, ref, terms, " forward");

    // Same upstream gradient on both sides (rounded through dtype like the inputs).
    Tensor w = as_seen(engine::uniform(ref.shape(), -1.0f, 1.0f, gen), dtype);
    engine::backward({ref}, {w});
    if (roundings) engine::backward({terms}, {abs_of(w)});
    testing_support::poison_device_pool(4 * ref.nbytes() + 1024);
    engine::backward({out}, {to_device(w, dtype)});
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      if (!c.differentiable[i]) continue;
      ASSERT_TRUE(gpu_in[i].grad().defined()) << c.label << " input " << i;
      expect_close(gpu_in[i].grad(), cpu_in[i].grad(), roundings ? abs_in[i].grad() : Tensor(),
                   " grad of input " + std::to_string(i));
    }
  }
}

std::string name(const testing::TestParamInfo<std::tuple<OpId, DType>>& info) {
  return std::string(engine::op_def(std::get<0>(info.param)).name) + "_" +
         engine::dtype_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(CudaOps, OpCudaParity,
                         testing::Combine(testing::ValuesIn(cuda_op_ids()),
                                          testing::Values(DType::F32, DType::BF16)),
                         name);

}  // namespace
