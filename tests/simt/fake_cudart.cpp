// A CPU test double of the CUDA runtime API, linked instead of libcudart by the SIMT
// emulation build only (the CUDA backend compiled by g++ and run on the CPU).
//
// - One emulated device, index 0. Device memory is host memory, so every copy kind
//   (cudaMemcpyDefault included) is a plain memmove.
// - Every call is synchronous: the work is done when the call returns, so streams are
//   bare handles, synchronisation returns at once, and events time the host clock.
// - The device holds 8 GiB, or the byte count in SIMT_DEVICE_BYTES (read once).
// - A failing call returns its error and records it as the thread's last error
//   (cudaGetLastError reads and clears it, cudaPeekAtLastError only reads it).
//
// - Pinned host memory (cudaHostAlloc, cudaMallocHost) is ordinary host memory, not
//   charged to the device; cudaFreeHost accepts only pointers it handed out.
//
// Limits: only the calls the engine, kernels, benches and tests make are defined; no
// kernel launch, peer, managed, graph or IPC API; no sticky (context-
// corrupting) errors; device properties are those of the emulated GPU's architecture
// (tests/simt/arch.h, SIMT_GPU) as far as the table has them, the rest zero.
#include <cuda_runtime_api.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>

#include "tests/simt/arch.h"

// The headers leave the handle structs incomplete; completing them here makes fake
// streams and events ordinary heap objects.
struct CUstream_st {
  unsigned flags;
};
struct CUevent_st {
  unsigned flags;
  bool recorded;
  std::chrono::steady_clock::time_point when;
};

namespace {

// cudaMalloc's alignment guarantee; the kernels' vector loads rely on it.
constexpr size_t kAlignment = 256;
constexpr size_t kDefaultCapacity = size_t{8} << 30;

thread_local cudaError_t last_error = cudaSuccess;

// Like the real runtime, every failure becomes the calling thread's last error.
cudaError_t fail(cudaError_t error) {
  last_error = error;
  return error;
}

// Rounded down to whole allocation units, so a request no larger than the free
// capacity still fits after rounding up (and the rounding cannot overflow).
size_t capacity() {
  static const size_t bytes = [] {
    const char* text = std::getenv("SIMT_DEVICE_BYTES");
    if (text == nullptr) return kDefaultCapacity;
    const char* end = text + std::strlen(text);
    size_t value = 0;
    auto [stop, error] = std::from_chars(text, end, value);
    value = value / kAlignment * kAlignment;
    if (error != std::errc() || stop != end || value == 0) {
      // A typo must not silently become the default size.
      std::fprintf(stderr, "fake_cudart: SIMT_DEVICE_BYTES=\"%s\" is not a byte count >= %zu\n",
                   text, kAlignment);
      std::abort();
    }
    return value;
  }();
  return bytes;
}

struct Memory {
  std::mutex mutex;
  std::unordered_map<void*, size_t> live;  // pointer -> bytes charged to the device
  size_t live_bytes = 0;
  std::unordered_map<void*, size_t> pinned;  // cudaHostAlloc pointer -> bytes
};

// Never destroyed: static destructors elsewhere may still free device memory.
Memory& memory() {
  static Memory* instance = new Memory();
  return *instance;
}

// simt::kEmulatedSms, or SIMT_SMS (read once): the dry-run test (tests/tools/
// test_train70b_dry_run_cuda.cpp) emulates the A100's 108 SMs, whose count sizes workspaces.
int emulated_sms() {
  static const int sms = [] {
    const char* text = std::getenv("SIMT_SMS");
    if (text == nullptr) return simt::kEmulatedSms;
    const char* end = text + std::strlen(text);
    int value = 0;
    auto [stop, error] = std::from_chars(text, end, value);
    if (error != std::errc() || stop != end || value < 1 || value > 1024) {
      std::fprintf(stderr, "fake_cudart: SIMT_SMS=\"%s\" is not an SM count in [1, 1024]\n", text);
      std::abort();
    }
    return value;
  }();
  return sms;
}

const cudaDeviceProp& emulated_device() {
  static const cudaDeviceProp prop = [] {
    const simt::Arch& a = simt::arch();
    cudaDeviceProp p{};
    std::snprintf(p.name, sizeof p.name, "SIMT emulator (CPU) as %s (%s)", a.name, a.example);
    p.major = a.major;
    p.minor = a.minor;
    p.multiProcessorCount = emulated_sms();
    p.totalGlobalMem = capacity();
    p.sharedMemPerBlock = simt::kDefaultDynamicShared;
    p.sharedMemPerBlockOptin = a.shared_per_block_optin;
    p.sharedMemPerMultiprocessor = a.shared_per_sm;
    p.warpSize = 32;
    p.maxThreadsPerBlock = a.max_threads_per_block;
    p.maxThreadsPerMultiProcessor = a.max_threads_per_sm;
    p.regsPerBlock = a.regs_per_block;
    p.regsPerMultiprocessor = a.regs_per_sm;
    p.l2CacheSize = a.l2_bytes;
    return p;
  }();
  return prop;
}

bool is_default_stream(cudaStream_t stream) {
  return stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread;
}

struct ErrorText { cudaError_t code; const char* name; const char* description; };

#define ERROR_TEXT(code, description) {code, #code, description}
constexpr ErrorText kErrorTexts[] = {
    ERROR_TEXT(cudaSuccess, "no error"),
    ERROR_TEXT(cudaErrorInvalidValue, "invalid argument"),
    ERROR_TEXT(cudaErrorMemoryAllocation, "out of memory"),
    ERROR_TEXT(cudaErrorInitializationError, "initialization error"),
    ERROR_TEXT(cudaErrorLaunchFailure, "unspecified launch failure"),
    ERROR_TEXT(cudaErrorInvalidMemcpyDirection, "invalid copy direction for memcpy"),
    ERROR_TEXT(cudaErrorInsufficientDriver,
               "CUDA driver version is insufficient for CUDA runtime version"),
    ERROR_TEXT(cudaErrorNoDevice, "no CUDA-capable device is detected"),
    ERROR_TEXT(cudaErrorInvalidDevice, "invalid device ordinal"),
    ERROR_TEXT(cudaErrorInvalidResourceHandle, "invalid resource handle"),
    ERROR_TEXT(cudaErrorNotReady, "device not ready"),
    ERROR_TEXT(cudaErrorUnknown, "unknown error"),
};
#undef ERROR_TEXT

const ErrorText* find_error_text(cudaError_t error) {
  for (const ErrorText& text : kErrorTexts)
    if (text.code == error) return &text;
  return nullptr;
}

}  // namespace

extern "C" {

// ---- errors ------------------------------------------------------------------------
cudaError_t cudaGetLastError() {
  cudaError_t error = last_error;
  last_error = cudaSuccess;
  return error;
}

cudaError_t cudaPeekAtLastError() { return last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  const ErrorText* text = find_error_text(error);
  return text != nullptr ? text->name : "unrecognized error code";
}

const char* cudaGetErrorString(cudaError_t error) {
  const ErrorText* text = find_error_text(error);
  return text != nullptr ? text->description : "unrecognized error code";
}

// ---- device ------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return fail(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return fail(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice);
}

cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (prop == nullptr) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  *prop = emulated_device();
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (value == nullptr) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  const cudaDeviceProp& p = emulated_device();
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = p.maxThreadsPerMultiProcessor; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(p.sharedMemPerBlock); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(p.sharedMemPerBlockOptin); break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
      *value = int(p.sharedMemPerMultiprocessor);
      break;
    case cudaDevAttrMaxRegistersPerBlock: *value = p.regsPerBlock; break;
    case cudaDevAttrMaxRegistersPerMultiprocessor: *value = p.regsPerMultiprocessor; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    default: return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* /*func*/, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize &&
      (value < 0 || size_t(value) > simt::arch().shared_per_block_optin))
    return fail(cudaErrorInvalidValue);
  return cudaSuccess;
}

// ---- memory ------------------------------------------------------------------------
cudaError_t cudaMalloc(void** devPtr, size_t size) {
  if (devPtr == nullptr) return fail(cudaErrorInvalidValue);
  *devPtr = nullptr;
  if (size == 0) return cudaSuccess;  // as the real one: success and a null pointer
  Memory& m = memory();
  std::lock_guard lock(m.mutex);
  if (size > capacity() - m.live_bytes) return fail(cudaErrorMemoryAllocation);
  const size_t bytes = (size + kAlignment - 1) / kAlignment * kAlignment;  // aligned_alloc's rule
  void* p = std::aligned_alloc(kAlignment, bytes);
  if (p == nullptr) return fail(cudaErrorMemoryAllocation);
  m.live.emplace(p, bytes);
  m.live_bytes += bytes;
  *devPtr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* devPtr) {
  if (devPtr == nullptr) return cudaSuccess;
  Memory& m = memory();
  std::lock_guard lock(m.mutex);
  auto it = m.live.find(devPtr);
  if (it == m.live.end()) return fail(cudaErrorInvalidValue);
  m.live_bytes -= it->second;
  m.live.erase(it);
  std::free(devPtr);
  return cudaSuccess;
}

// Pinned host memory: page-locking has no meaning here; the set of live pointers makes
// a double or foreign cudaFreeHost an error, as on the real runtime.
cudaError_t cudaHostAlloc(void** pHost, size_t size, unsigned int flags) {
  constexpr unsigned kKnownFlags = cudaHostAllocPortable | cudaHostAllocMapped |
                                   cudaHostAllocWriteCombined;
  if (pHost == nullptr || (flags & ~kKnownFlags) != 0) return fail(cudaErrorInvalidValue);
  *pHost = nullptr;
  if (size == 0) return cudaSuccess;
  const size_t bytes = (size + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, bytes);
  if (p == nullptr) return fail(cudaErrorMemoryAllocation);
  Memory& m = memory();
  std::lock_guard lock(m.mutex);
  m.pinned.emplace(p, bytes);
  *pHost = p;
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t size) {
  return cudaHostAlloc(ptr, size, cudaHostAllocDefault);
}

cudaError_t cudaFreeHost(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  Memory& m = memory();
  std::lock_guard lock(m.mutex);
  auto it = m.pinned.find(ptr);
  if (it == m.pinned.end()) return fail(cudaErrorInvalidValue);
  m.pinned.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  if (free == nullptr || total == nullptr) return fail(cudaErrorInvalidValue);
  Memory& m = memory();
  std::lock_guard lock(m.mutex);
  *total = capacity();
  *free = capacity() - m.live_bytes;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault)
    return fail(cudaErrorInvalidMemcpyDirection);
  if (count == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return fail(cudaErrorInvalidValue);
  std::memmove(dst, src, count);  // memmove: the ranges may overlap
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t /*stream*/) {
  return cudaMemcpy(dst, src, count, kind);
}

cudaError_t cudaMemset(void* devPtr, int value, size_t count) {
  if (count == 0) return cudaSuccess;
  if (devPtr == nullptr) return fail(cudaErrorInvalidValue);
  std::memset(devPtr, value, count);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* devPtr, int value, size_t count, cudaStream_t /*stream*/) {
  return cudaMemset(devPtr, value, count);
}

// ---- streams -----------------------------------------------------------------------
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* pStream, unsigned int flags) {
  if (pStream == nullptr || (flags & ~unsigned{cudaStreamNonBlocking}) != 0)
    return fail(cudaErrorInvalidValue);
  *pStream = new (std::nothrow) CUstream_st{flags};
  return *pStream != nullptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaStreamCreate(cudaStream_t* pStream) {
  return cudaStreamCreateWithFlags(pStream, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (is_default_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t /*stream*/) { return cudaSuccess; }

// Every call is synchronous, so the event has completed already: only the handles are checked.
cudaError_t cudaStreamWaitEvent(cudaStream_t /*stream*/, cudaEvent_t event, unsigned int flags) {
  if (event == nullptr) return fail(cudaErrorInvalidResourceHandle);
  if (flags != 0) return fail(cudaErrorInvalidValue);
  return cudaSuccess;
}

cudaError_t cudaStreamGetFlags(cudaStream_t hStream, unsigned int* flags) {
  if (flags == nullptr) return fail(cudaErrorInvalidValue);
  *flags = is_default_stream(hStream) ? cudaStreamDefault : hStream->flags;
  return cudaSuccess;
}

// ---- events ------------------------------------------------------------------------
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  constexpr unsigned kKnownFlags = cudaEventBlockingSync | cudaEventDisableTiming |
                                   cudaEventInterprocess;
  if (event == nullptr || (flags & ~kKnownFlags) != 0) return fail(cudaErrorInvalidValue);
  *event = new (std::nothrow) CUevent_st{flags, false, {}};
  return *event != nullptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (event == nullptr) return fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t /*stream*/) {
  if (event == nullptr) return fail(cudaErrorInvalidResourceHandle);
  event->recorded = true;
  event->when = std::chrono::steady_clock::now();
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  return event != nullptr ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

// As documented for the real runtime, an event never recorded or created with
// cudaEventDisableTiming is an invalid handle here (cudaErrorNotReady would mean
// "recorded but not finished", which cannot happen when every call is synchronous).
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == nullptr) return fail(cudaErrorInvalidValue);
  for (cudaEvent_t event : {start, end})
    if (event == nullptr || !event->recorded || (event->flags & cudaEventDisableTiming) != 0)
      return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

}  // extern "C"
