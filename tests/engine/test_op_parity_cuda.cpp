// Every registry op with a CUDA implementation, every case, in f32 and bf16: the
// CUDA forward and backward against the CPU reference on fresh random inputs.
//
// bf16 inputs are rounded on the host first, so both sides see identical values;
// the CPU reference then runs in f32. Per element the allowed difference is
//   u_out |ref| + 2 K u_f32 (|ref| + rms ref)
// (u_out: unit roundoff of the output type, 2^-8 for bf16 and 2^-24 for f32, for the
// final rounding; K u_f32: fp32 accumulation of length K in either order).
// The device memory pool is poisoned with NaN first, so an output element the
// kernel forgets to write shows up as NaN and fails. (Attention in f32 runs the
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

using testing_support::expect_close_to_reference;

class OpCudaParity : public testing::TestWithParam<std::tuple<OpId, DType>> {};

TEST_P(OpCudaParity, ForwardAndBackwardMatchCpu) {
  SKIP_WITHOUT_GPU();
  auto [id, dtype] = GetParam();
  engine::Generator gen(kSeed + 1);
  for (const auto& c : testing_support::op_cases(id, kSeed)) {
    std::vector<Tensor> cpu_in, gpu_in;
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      cpu_in.push_back(as_seen(c.inputs[i], dtype).set_requires_grad(c.differentiable[i]));
      gpu_in.push_back(to_device(c.inputs[i], dtype).set_requires_grad(c.differentiable[i]));
    }
    Tensor ref = engine::call_op(id, cpu_in, c.attrs)[0];
    test_support::poison_device_pool(4 * ref.nbytes() + 1024);
    Tensor out = engine::call_op(id, gpu_in, c.attrs)[0];
    EXPECT_EQ(out.shape(), ref.shape()) << c.label;
    expect_close_to_reference(out, ref, dtype, c.accumulation, c.label + " forward");

    // Same upstream gradient on both sides (rounded through dtype like the inputs).
    Tensor w = as_seen(engine::uniform(ref.shape(), -1.0f, 1.0f, gen), dtype);
    engine::backward({ref}, {w});
    test_support::poison_device_pool(4 * ref.nbytes() + 1024);
    engine::backward({out}, {to_device(w, dtype)});
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      if (!c.differentiable[i]) continue;
      ASSERT_TRUE(gpu_in[i].grad().defined()) << c.label << " input " << i;
      expect_close_to_reference(gpu_in[i].grad(), cpu_in[i].grad(), dtype,
                   c.accumulation, c.label + " grad of input " + std::to_string(i));
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
