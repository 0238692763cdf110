#include "engine/backend.h"

#include <cstring>

#include "engine/tensor.h"
#include "kernels/math/bf16.h"
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

}  // namespace backend

#if !ENGINE_WITH_CUDA
Allocator& allocator_for(Device device) {
  ENGINE_CHECK(device.is_cpu(), "no allocator for ", device.str(), " in a build without CUDA");
  return cpu_allocator();
}
#endif

}  // namespace engine
