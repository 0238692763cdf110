// The CUDA half of NF4 frozen weights (engine/quant/nf4_linear.cpp): quantization,
// dequantization and the small-M matmul on the weight's device, by the NF4 kernels
// (kernels/nf4.h), on the current stream.
#include "engine/backend.h"
#include "engine/cuda/runtime.h"
#include "engine/nvtx.h"
#include "engine/quant/nf4.h"
#include "engine/tensor.h"
#include "kernels/nf4.h"
#include "kernels/nf4_layout.h"

namespace engine::backend {

namespace {

using quant::kNestedBlock;
using quant::Nf4Weight;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The weight's fields as the kernels take them, after checking that they fit its shape and
// live on its device.
kernels::Nf4Scales device_scales(const Nf4Weight& w) {
  const Device dev = w.packed.device();
  ENGINE_CHECK(w.packed.numel() == ceil_div(w.numel(), 2), "NF4 packed data of ",
               w.packed.numel(), " bytes does not fit shape ", w.shape.str());
  kernels::Nf4Scales s;
  if (w.double_quant) {
    ENGINE_CHECK(w.absmax_q.numel() == w.num_blocks() &&
                     w.nested_absmax.numel() == ceil_div(w.num_blocks(), kNestedBlock),
                 "NF4 statistics do not fit shape ", w.shape.str());
    ENGINE_CHECK(w.absmax_q.device() == dev && w.nested_absmax.device() == dev,
                 "NF4 statistics are not on ", dev.str());
    s.absmax_q = w.absmax_q.data<uint8_t>();
    s.nested = w.nested_absmax.data<float>();
    s.offset = w.offset;
  } else {
    ENGINE_CHECK(w.absmax.numel() == w.num_blocks() && w.absmax.device() == dev,
                 "NF4 absmax does not fit shape ", w.shape.str(), " on ", dev.str());
    s.absmax = w.absmax.data<float>();
  }
  return s;
}

// W as a dense bf16 or f32 tensor on the weight's device.
Tensor dequantize_on_device(const Nf4Weight& w, DType dtype) {
  NvtxRange range("nf4_dequantize");
  const kernels::Nf4Scales scales = device_scales(w);
  Tensor out = Tensor::empty(w.shape, dtype, w.packed.device());
  kernels::nf4_dequantize(out.raw_data(),
                          dtype == DType::BF16 ? kernels::ElemType::BF16 : kernels::ElemType::F32,
                          w.packed.data<uint8_t>(), scales, w.numel(), cuda::current_stream());
  return out;
}

}  // namespace

Nf4Weight device_nf4_quantize(const Tensor& dense, bool double_quant) {
  ENGINE_CHECK(dense.defined() && dense.device().is_cuda(),
               "quantize_on_device needs a tensor on a CUDA device, got ",
               dense.defined() ? dense.str() : std::string("an undefined tensor"));
  ENGINE_CHECK(dense.rank() == 2, "an nf4 linear weight must be [out, in], got ", dense.str());
  ENGINE_CHECK(dense.dtype() == DType::F32 || dense.dtype() == DType::BF16 ||
                   dense.dtype() == DType::F16,
               "quantize_on_device needs a float tensor, got ", dense.str());
  ENGINE_CHECK(dense.numel() > 0, "quantize_on_device of an empty tensor ", dense.str());
  NvtxRange range("nf4_quantize");
  // f16 values are exact in f32; the kernel reads f32 or bf16.
  const Tensor x = dense.dtype() == DType::F16 ? dense.to_dtype(DType::F32) : dense;
  const Device dev = x.device();
  const int64_t n = x.numel();
  cudaStream_t stream = cuda::current_stream();
  Nf4Weight q;
  q.shape = x.shape();
  q.double_quant = double_quant;
  const int64_t blocks = q.num_blocks();
  q.packed = Tensor::empty({ceil_div(n, 2)}, DType::U8, dev);
  Tensor absmax = Tensor::empty({blocks}, DType::F32, dev);
  kernels::nf4_quantize(x.raw_data(),
                        x.dtype() == DType::F32 ? kernels::ElemType::F32 : kernels::ElemType::BF16,
                        n, q.packed.data<uint8_t>(), absmax.data<float>(), stream);
  if (!double_quant) {
    q.absmax = absmax;
    return q;
  }
  Tensor offset = Tensor::empty({1}, DType::F32, dev);
  q.absmax_q = Tensor::empty({blocks}, DType::U8, dev);
  q.nested_absmax = Tensor::empty({ceil_div(blocks, kNestedBlock)}, DType::F32, dev);
  kernels::nf4_double_quantize(absmax.data<float>(), blocks, offset.data<float>(),
                               q.absmax_q.data<uint8_t>(), q.nested_absmax.data<float>(), stream);
  q.offset = offset.item();  // four bytes back to the host; waits for the kernels
  return q;
}

Tensor device_nf4_dequantize(const Nf4Weight& w, DType dtype) {
  return dequantize_on_device(w, dtype);
}

Tensor device_nf4_matmul(const Nf4Weight& w, const Tensor& x) {
  const Device dev = w.packed.device();
  if (!dev.is_cuda() || !x.defined() || x.device() != dev || x.dtype() != DType::BF16 ||
      x.rank() < 1)
    return Tensor();
  const int64_t k = w.shape[1], n = w.shape[0];
  ENGINE_CHECK(x.shape().last() == k, "nf4 matmul_direct: x ", x.str(), " does not match W [",
               n, ", ", k, "]");
  const int64_t m = x.shape().rows();
  if (m > kernels::nf4::kMaxSmallM) return Tensor();
  NvtxRange range("nf4_matmul_small_m");
  const kernels::Nf4Scales scales = device_scales(w);
  Tensor y = Tensor::empty(x.shape().with(-1, n), DType::BF16, dev);
  const size_t workspace_bytes = kernels::nf4_matmul_small_m_workspace_bytes(m, n, k);
  Tensor workspace;
  if (workspace_bytes > 0)
    workspace = Tensor::empty({static_cast<int64_t>(workspace_bytes)}, DType::U8, dev);
  kernels::nf4_matmul_small_m(y.raw_data(), x.raw_data(), w.packed.data<uint8_t>(), scales, m, n,
                              k, workspace.defined() ? workspace.raw_data() : nullptr,
                              workspace_bytes, cuda::current_stream());
  return y;
}

}  // namespace engine::backend
