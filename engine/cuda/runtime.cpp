// The CUDA side of engine/backend.h (see engine/cuda/runtime.h): device discovery,
// the per-thread current stream, copies, conversions, fills, and the per-device
// caching allocators.
#include "engine/cuda/runtime.h"

#include <nvtx3/nvToolsExtCudaRt.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend.h"
#include "engine/cuda/caching_allocator.h"
#include "engine/tensor.h"
#include "kernels/check.h"
#include "kernels/elementwise.h"

namespace engine {

namespace {

struct Availability {
  bool ok = false;
  int devices = 0;
  std::string reason;
};

// Asked once per process: the answer does not change while it runs.
const Availability& availability() {
  static const Availability answer = [] {
    Availability a;
    cudaError_t err = cudaGetDeviceCount(&a.devices);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      a.devices = 0;
      a.reason = detail::concat("cudaGetDeviceCount failed: ", cudaGetErrorName(err), " (",
                                static_cast<int>(err), "): ", cudaGetErrorString(err));
      return a;
    }
    if (a.devices == 0) {
      a.reason = "cudaGetDeviceCount found no CUDA device";
      return a;
    }
    err = cudaFree(nullptr);  // creates the primary context: catches a device we cannot use
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      a.reason = detail::concat("creating a CUDA context failed: ", cudaGetErrorName(err), " (",
                                static_cast<int>(err), "): ", cudaGetErrorString(err));
      return a;
    }
    a.ok = true;
    return a;
  }();
  return answer;
}

}  // namespace

bool cuda_available(std::string* reason) {
  const Availability& a = availability();
  if (reason) *reason = a.reason;
  return a.ok;
}

Allocator& allocator_for(Device device) {
  if (device.is_cpu()) return cpu_allocator();
  const Availability& a = availability();
  ENGINE_CHECK(a.ok, "no allocator for ", device.str(), ": ", a.reason);
  ENGINE_CHECK(device.index >= 0 && device.index < a.devices, "no allocator for ", device.str(),
               ": ", a.devices, " CUDA device(s) visible");
  // One per device, built once and never destroyed (blocks may outlive static
  // destruction order; the process exit returns device memory anyway).
  static std::vector<cuda::CachingAllocator*>* allocators = [&a] {
    auto* v = new std::vector<cuda::CachingAllocator*>();
    for (int i = 0; i < a.devices; ++i) v->push_back(new cuda::CachingAllocator(i));
    return v;
  }();
  return *(*allocators)[static_cast<size_t>(device.index)];
}

}  // namespace engine

namespace engine::cuda {

namespace {

// The stream this thread queues work on. `owned` is created on first use and
// destroyed when the thread ends; set_current_stream overrides it.
struct ThreadStream {
  cudaStream_t owned = nullptr;
  cudaStream_t chosen = nullptr;
  bool has_chosen = false;
  ThreadStream() = default;
  ThreadStream(const ThreadStream&) = delete;
  ThreadStream& operator=(const ThreadStream&) = delete;
  ~ThreadStream() {
    if (owned) (void)cudaStreamDestroy(owned);  // queued work still completes
  }
};

thread_local ThreadStream thread_stream;
std::atomic<int> streams_created{0};

kernels::ElemType float_type(const Tensor& t, const char* what) {
  switch (t.dtype()) {
    case DType::F32: return kernels::ElemType::F32;
    case DType::BF16: return kernels::ElemType::BF16;
    case DType::F16: return kernels::ElemType::F16;
    default: break;
  }
  ENGINE_CHECK(false, what, ": ", t.str(), " is not a float tensor (f32, bf16, f16)");
  return kernels::ElemType::F32;
}

void require_cuda(const Tensor& t, const char* what) {
  ENGINE_CHECK(t.device().is_cuda(), what, ": ", t.str(), " is not on a CUDA device");
}

}  // namespace

cudaStream_t current_stream() {
  ThreadStream& ts = thread_stream;
  if (ts.has_chosen) return ts.chosen;
  if (!ts.owned) {
    CUDA_CHECK(cudaStreamCreateWithFlags(&ts.owned, cudaStreamNonBlocking));
    std::string name = "engine stream " + std::to_string(streams_created.fetch_add(1));
    nvtxNameCudaStreamA(ts.owned, name.c_str());
  }
  return ts.owned;
}

void set_current_stream(cudaStream_t stream) {
  thread_stream.chosen = stream;
  thread_stream.has_chosen = true;
}

void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  ENGINE_CHECK(dst && src, "copy of ", bytes, " bytes from ", src_device.str(), " to ",
               dst_device.str(), ": null pointer");
  cudaStream_t stream = current_stream();
  // cudaMemcpyDefault infers the direction from the addresses (unified addressing).
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
  // The host buffer is the caller's to reuse (source) or read (destination) on return.
  if (dst_device.is_cpu() || src_device.is_cpu()) CUDA_CHECK(cudaStreamSynchronize(stream));
}

void convert(Tensor& dst, const Tensor& src) {
  require_cuda(dst, "convert");
  ENGINE_CHECK(dst.numel() == src.numel() && dst.device() == src.device(), "convert ", src.str(),
               " to ", dst.str());
  kernels::convert(dst.raw_data(), float_type(dst, "convert"), src.raw_data(),
                   float_type(src, "convert"), src.numel(), current_stream());
}

void fill(Tensor& dst, float value) {
  require_cuda(dst, "fill");
  cudaStream_t stream = current_stream();
  switch (dst.dtype()) {
    case DType::F32:
    case DType::BF16:
    case DType::F16:
      kernels::fill(dst.raw_data(), float_type(dst, "fill"), value, dst.numel(), stream);
      return;
    case DType::I32: {
      int32_t v = static_cast<int32_t>(value);
      uint32_t bits;
      std::memcpy(&bits, &v, sizeof bits);
      kernels::fill_u32(dst.raw_data(), bits, dst.numel(), stream);
      return;
    }
    case DType::U8:
      CUDA_CHECK(cudaMemsetAsync(dst.raw_data(), static_cast<uint8_t>(value), dst.nbytes(), stream));
      return;
    case DType::NF4: break;
  }
  ENGINE_CHECK(false, "cannot fill ", dst.str());
}

void accumulate(Tensor& dst, const Tensor& src) {
  require_cuda(dst, "accumulate");
  ENGINE_CHECK(dst.shape() == src.shape() && dst.dtype() == src.dtype() &&
                   dst.device() == src.device(),
               "accumulate ", src.str(), " into ", dst.str());
  kernels::accumulate(dst.raw_data(), src.raw_data(), float_type(dst, "accumulate"), dst.numel(),
                      current_stream());
}

void synchronize() { CUDA_CHECK(cudaStreamSynchronize(current_stream())); }

void fill_random(Tensor& t, bool normal, float a, float b, uint64_t seed, uint64_t offset) {
  require_cuda(t, "random fill");
  ENGINE_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16, "random fill of ", t.str());
  kernels::philox_fill(t.raw_data(), float_type(t, "random fill"), normal, a, b, seed, offset,
                       t.numel(), current_stream());
}

}  // namespace engine::cuda
