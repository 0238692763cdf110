#include "engine/backend.h"

#include <cstring>

#include "engine/cuda/ops.h"
#include "engine/cuda/pinned_allocator.h"
#include "engine/optim/paged_adamw.h"
#include "engine/gpu_spec.h"
#include "engine/quant/nf4.h"
#include "engine/tensor.h"
#include "kernels/math/bf16.h"
#include "kernels/math/philox.h"
#if ENGINE_WITH_CUDA
#include "engine/cuda/runtime.h"
#endif

namespace engine {

#if !ENGINE_WITH_CUDA
bool cuda_available(std::string* reason) {
  if (reason) *reason = "this build has no CUDA backend (nvcc was not found at configure time)";
  return false;
}
#endif

namespace {

// Host conversion between the float formats; f16 goes through _Float16.
float load_float(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return kmath::bf16_bits_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::F16: return static_cast<float>(static_cast<const _Float16*>(p)[i]);
    default: ENGINE_CHECK(false, "no float conversion from ", dtype_name(t));
  }
  return 0;
}

void store_float(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = v; break;
    case DType::BF16: static_cast<uint16_t*>(p)[i] = kmath::float_to_bf16_bits(v); break;
    case DType::F16: static_cast<_Float16*>(p)[i] = static_cast<_Float16>(v); break;
    case DType::I32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case DType::U8: static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v); break;
    case DType::NF4: ENGINE_CHECK(false, "cannot fill a packed nf4 tensor");
  }
}

}  // namespace

namespace backend {

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#if ENGINE_WITH_CUDA
  cuda::copy(dst, dst_device, src, src_device, bytes);
#else
  ENGINE_CHECK(false, "copy between ", src_device.str(), " and ", dst_device.str(),
               " in a build without CUDA");
#endif
}

void convert(Tensor& dst, const Tensor& src) {
  ENGINE_CHECK(dst.numel() == src.numel() && dst.device() == src.device(), "convert ", src.str(),
               " to ", dst.str());
  if (dst.device().is_cpu()) {
    for (int64_t i = 0; i < src.numel(); ++i)
      store_float(dst.raw_data(), dst.dtype(), i, load_float(src.raw_data(), src.dtype(), i));
    return;
  }
#if ENGINE_WITH_CUDA
  cuda::convert(dst, src);
#endif
}

void fill(Tensor& dst, float value) {
  if (dst.device().is_cpu()) {
    for (int64_t i = 0; i < dst.numel(); ++i) store_float(dst.raw_data(), dst.dtype(), i, value);
    return;
  }
#if ENGINE_WITH_CUDA
  cuda::fill(dst, value);
#endif
}

void accumulate(Tensor& dst, const Tensor& src) {
  ENGINE_CHECK(dst.shape() == src.shape() && dst.dtype() == src.dtype() &&
                   dst.device() == src.device(),
               "accumulate ", src.str(), " into ", dst.str());
  if (dst.device().is_cpu()) {
    for (int64_t i = 0; i < dst.numel(); ++i)
      store_float(dst.raw_data(), dst.dtype(), i,
                  load_float(dst.raw_data(), dst.dtype(), i) + load_float(src.raw_data(), src.dtype(), i));
    return;
  }
#if ENGINE_WITH_CUDA
  cuda::accumulate(dst, src);
#endif
}

void synchronize(Device device) {
#if ENGINE_WITH_CUDA
  if (device.is_cuda()) cuda::synchronize();
#else
  (void)device;
#endif
}

void fill_random(Tensor& t, bool normal, float a, float b, uint64_t seed, uint64_t offset) {
  if (t.device().is_cuda()) {
#if ENGINE_WITH_CUDA
    cuda::fill_random(t, normal, a, b, seed, offset);
#endif
    return;
  }
  ENGINE_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16, "random fill of ", t.str());
  for (int64_t i = 0; i < t.numel(); ++i) {
    const auto counter = static_cast<uint64_t>(i);
    const float v = normal ? a + b * kmath::philox_normal(seed, offset, counter)
                           : a + (b - a) * kmath::philox_uniform(seed, offset, counter);
    store_float(t.raw_data(), t.dtype(), i, v);
  }
}

#if !ENGINE_WITH_CUDA
// The device-only entry points, in a build that has no device tensors to pass them.
double device_sum_squares(const std::vector<Tensor>&) {
  ENGINE_CHECK(false, "sum of squares on a device in a build without CUDA");
  return 0;
}
void device_scale(Tensor& t, float) {
  ENGINE_CHECK(false, "scale of ", t.str(), " in a build without CUDA");
}
void device_adamw_step(const std::vector<Tensor>&, std::vector<Tensor>&, std::vector<Tensor>&,
                       const std::vector<size_t>&, const kmath::AdamWStep&) {
  ENGINE_CHECK(false, "AdamW on a device in a build without CUDA");
}
quant::Nf4Weight device_nf4_quantize(const Tensor& dense, bool) {
  ENGINE_CHECK(false, "quantize_on_device needs a CUDA build; got ", dense.str());
  return {};
}
Tensor device_nf4_dequantize(const quant::Nf4Weight&, DType) {
  ENGINE_CHECK(false, "NF4 dequantization on a device in a build without CUDA");
  return {};
}
Tensor device_nf4_matmul(const quant::Nf4Weight&, const Tensor&) { return {}; }
std::vector<Tensor> device_lm_head_eval(const Tensor& h, const Tensor&, const Tensor&, int, int64_t) {
  ENGINE_CHECK(false, "lm_head_eval of ", h.str(), " in a build without CUDA");
  return {};
}
#endif

}  // namespace backend

#if !ENGINE_WITH_CUDA
Allocator& allocator_for(Device device) {
  ENGINE_CHECK(device.is_cpu(), "no allocator for ", device.str(), " in a build without CUDA");
  return cpu_allocator();
}

// The op registry's CUDA column (engine/cuda/ops.cpp in CUDA builds): empty everywhere.
OpImpl cuda_ops::impl(OpId) { return OpImpl{}; }

// Pinned host memory (engine/cuda/pinned_allocator.cpp in CUDA builds): none here.
bool cuda::pinned_memory_available(std::string* reason) {
  std::string why;
  cuda_available(&why);
  if (reason) *reason = "no GPU for pinned host memory: " + why;
  return false;
}
Allocator& cuda::pinned_allocator() {
  std::string reason;
  cuda::pinned_memory_available(&reason);
  throw Error(reason);
}

// The paged optimizer's device half (engine/cuda/paged_adamw.cpp in CUDA builds).
void backend::device_paged_adamw_step(const std::vector<Tensor>&, const std::vector<optim::StateChunk>&,
                                      uint8_t*, std::vector<Tensor>&, const kmath::AdamWStep&) {
  ENGINE_CHECK(false, "paged AdamW on a device in a build without CUDA");
}

GpuSpec cuda_device_spec(int) {
  std::string reason;
  cuda_available(&reason);
  throw Error("no CUDA device: " + reason);
}
#endif

}  // namespace engine
