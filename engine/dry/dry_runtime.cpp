// The dry CUDA runtime API: what is faked and why is in dry_runtime.h. Defines the
// runtime calls the product makes (nm -u of its objects) and the host-stub entry
// points nvcc's generated code calls (registration of the fat binary and its kernels,
// the <<<...>>> launch sequence).
#include "engine/dry/dry_runtime.h"

#include <cuda_runtime_api.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

struct CUstream_st {
  unsigned flags;
};
struct CUevent_st {
  unsigned flags;
};

namespace engine::dry {

namespace {

constexpr size_t kAlignment = 512;               // what cudaMalloc gives in practice
constexpr size_t kDeviceRange = size_t{1} << 42;  // 4 TiB of address space, never committed
constexpr size_t kDefaultSharedPerBlock = 48 * 1024;

struct State {
  std::mutex mutex;
  GpuSpec spec;  // a100-80gb until configure()
  char* base = nullptr;  // the reserved device range
  bool reserve_failed = false;
  std::map<size_t, size_t> free_ranges;        // offset -> bytes, coalesced
  std::map<size_t, size_t> live;               // offset -> bytes
  std::map<uintptr_t, size_t> pinned;          // address -> mapped bytes
  std::unordered_map<const void*, int> kernel_shared;  // kernel -> opt-in dynamic shared
  Counters counters;
};

State& state() {
  static State* s = new State();  // never destroyed: static destructors free memory late
  return *s;
}

thread_local cudaError_t last_error = cudaSuccess;

cudaError_t fail(cudaError_t error) {
  last_error = error;
  return error;
}

size_t round_up(size_t bytes, size_t to) { return (bytes + to - 1) / to * to; }

// Under s.mutex. Reserves the device range on first use.
bool reserve_locked(State& s) {
  if (s.base) return true;
  if (s.reserve_failed) return false;
  void* p = ::mmap(nullptr, kDeviceRange, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
  if (p == MAP_FAILED) {
    s.reserve_failed = true;
    std::fprintf(stderr, "dry CUDA runtime: cannot reserve %zu bytes of address space\n",
                 kDeviceRange);
    return false;
  }
  s.base = static_cast<char*>(p);
  s.free_ranges.emplace(0, kDeviceRange);
  return true;
}

bool in_device_range(const State& s, const void* p) {
  const char* c = static_cast<const char*>(p);
  return s.base != nullptr && c >= s.base && c < s.base + kDeviceRange;
}

// [p, p + bytes) inside one live allocation (under s.mutex).
bool inside_live_locked(const State& s, const void* p, size_t bytes) {
  const size_t offset = static_cast<size_t>(static_cast<const char*>(p) - s.base);
  auto it = s.live.upper_bound(offset);
  if (it == s.live.begin()) return false;
  --it;
  return offset + bytes <= it->first + it->second;
}

bool inside_pinned_locked(const State& s, const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = s.pinned.upper_bound(a);
  if (it == s.pinned.begin()) return false;
  --it;
  return a < it->first + it->second;
}

// A copy or memset touching `bytes` at p: device ranges must lie inside a live block.
bool check_range_locked(const State& s, const void* p, size_t bytes) {
  return !in_device_range(s, p) || inside_live_locked(s, p, bytes);
}

cudaError_t copy(void* dst, const void* src, size_t count) {
  if (count == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (!check_range_locked(s, dst, count) || !check_range_locked(s, src, count))
    return fail(cudaErrorInvalidValue);
  ++s.counters.copies;
  // Device -> pageable host: the placeholder value. Pinned destinations stay untouched
  // (never committed); host -> host is a real copy (nothing on the device is involved).
  const bool dst_host = !in_device_range(s, dst), src_host = !in_device_range(s, src);
  if (dst_host && src_host) std::memmove(dst, src, count);
  else if (dst_host && !inside_pinned_locked(s, dst)) std::memset(dst, 0, count);
  return cudaSuccess;
}

cudaError_t memset_checked(void* p, size_t count) {
  if (count == 0) return cudaSuccess;
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (p == nullptr || !in_device_range(s, p) || !inside_live_locked(s, p, count))
    return fail(cudaErrorInvalidValue);
  return cudaSuccess;
}

// The launch limits every GPU the engine targets shares, and the chosen GPU's shared memory.
cudaError_t check_launch(const void* kernel, dim3 grid, dim3 block, size_t shared) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  ++s.counters.launches;
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 ||
      grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    return fail(cudaErrorInvalidConfiguration);
  auto it = s.kernel_shared.find(kernel);
  const size_t allowed = it != s.kernel_shared.end() ? size_t(it->second) : kDefaultSharedPerBlock;
  if (shared > allowed) return fail(cudaErrorInvalidValue);
  return cudaSuccess;
}

struct LaunchConfig {
  dim3 grid, block;
  size_t shared;
  cudaStream_t stream;
};
thread_local std::vector<LaunchConfig> launch_configs;

struct ErrorText {
  cudaError_t code;
  const char* name;
  const char* description;
};
#define ERROR_TEXT(code, description) {code, #code, description}
constexpr ErrorText kErrorTexts[] = {
    ERROR_TEXT(cudaSuccess, "no error"),
    ERROR_TEXT(cudaErrorInvalidValue, "invalid argument"),
    ERROR_TEXT(cudaErrorMemoryAllocation, "out of memory"),
    ERROR_TEXT(cudaErrorInvalidConfiguration, "invalid configuration argument"),
    ERROR_TEXT(cudaErrorInvalidDevice, "invalid device ordinal"),
    ERROR_TEXT(cudaErrorInvalidResourceHandle, "invalid resource handle"),
    ERROR_TEXT(cudaErrorNotSupported, "operation not supported (dry CUDA runtime)"),
};
#undef ERROR_TEXT

const ErrorText* find_error_text(cudaError_t error) {
  for (const ErrorText& t : kErrorTexts)
    if (t.code == error) return &t;
  return nullptr;
}

}  // namespace

void configure(const GpuSpec& spec) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  s.spec = spec;
}

const GpuSpec& device_spec() { return state().spec; }

Counters counters() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  Counters c = s.counters;
  c.matmuls = matmul_count();
  return c;
}

bool is_device_address(const void* p) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  return in_device_range(s, p);
}

}  // namespace engine::dry

using engine::dry::fail;
using engine::dry::state;

extern "C" {

// ---- errors and versions -------------------------------------------------------------
cudaError_t cudaGetLastError() {
  cudaError_t e = engine::dry::last_error;
  engine::dry::last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return engine::dry::last_error; }
const char* cudaGetErrorName(cudaError_t e) {
  const auto* t = engine::dry::find_error_text(e);
  return t ? t->name : "unrecognized error code";
}
const char* cudaGetErrorString(cudaError_t e) {
  const auto* t = engine::dry::find_error_text(e);
  return t ? t->description : "unrecognized error code";
}
cudaError_t cudaDriverGetVersion(int* v) {
  if (!v) return fail(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) { return cudaDriverGetVersion(v); }

// ---- the device ----------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice);
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (!prop) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  const engine::GpuSpec& g = engine::dry::device_spec();
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "%s", g.name.c_str());
  prop->major = g.major;
  prop->minor = g.minor;
  prop->multiProcessorCount = g.sms;
  prop->totalGlobalMem = g.total_memory;
  prop->sharedMemPerBlock = engine::dry::kDefaultSharedPerBlock;
  prop->sharedMemPerBlockOptin = g.shared_per_block_optin;
  prop->sharedMemPerMultiprocessor = g.shared_per_sm;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsPerMultiProcessor = 2048;
  prop->regsPerBlock = 65536;
  prop->regsPerMultiprocessor = 65536;
  prop->l2CacheSize = g.l2_bytes;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value) return fail(cudaErrorInvalidValue);
  cudaDeviceProp p;
  if (cudaError_t e = cudaGetDeviceProperties(&p, device); e != cudaSuccess) return e;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = p.maxThreadsPerMultiProcessor; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(p.sharedMemPerBlock); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(p.sharedMemPerBlockOptin); break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = int(p.sharedMemPerMultiprocessor); break;
    case cudaDevAttrMaxRegistersPerBlock: *value = p.regsPerBlock; break;
    case cudaDevAttrMaxRegistersPerMultiprocessor: *value = p.regsPerMultiprocessor; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    case cudaDevAttrMaxBlockDimX: case cudaDevAttrMaxBlockDimY: *value = 1024; break;
    case cudaDevAttrMaxBlockDimZ: *value = 64; break;
    case cudaDevAttrMaxGridDimX: *value = 0x7fffffff; break;
    case cudaDevAttrMaxGridDimY: case cudaDevAttrMaxGridDimZ: *value = 65535; break;
    default: return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  auto& s = state();
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || size_t(value) > s.spec.shared_per_block_optin) return fail(cudaErrorInvalidValue);
  std::lock_guard lock(s.mutex);
  s.kernel_shared[func] = value;
  return cudaSuccess;
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, const void* /*func*/) {
  if (!attr) return fail(cudaErrorInvalidValue);
  *attr = cudaFuncAttributes{};
  attr->maxThreadsPerBlock = 1024;
  attr->ptxVersion = attr->binaryVersion = state().spec.major * 10 + state().spec.minor;
  return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* blocks, const void*,
                                                                   int block_size, size_t shared,
                                                                   unsigned int) {
  if (!blocks || block_size <= 0) return fail(cudaErrorInvalidValue);
  const auto& g = state().spec;
  int by_threads = 2048 / block_size;
  int by_shared = shared ? int(g.shared_per_sm / shared) : 32;
  *blocks = std::max(0, std::min({by_threads, by_shared, 32}));
  return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* f, int b,
                                                          size_t shared) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(blocks, f, b, shared, 0);
}

// ---- device memory: virtual addresses ------------------------------------------------
cudaError_t cudaMalloc(void** ptr, size_t size) {
  if (!ptr) return fail(cudaErrorInvalidValue);
  *ptr = nullptr;
  if (size == 0) return cudaSuccess;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  if (!engine::dry::reserve_locked(s)) return fail(cudaErrorMemoryAllocation);
  const size_t bytes = engine::dry::round_up(size, engine::dry::kAlignment);
  for (auto it = s.free_ranges.begin(); it != s.free_ranges.end(); ++it) {  // first fit
    if (it->second < bytes) continue;
    const size_t offset = it->first, rest = it->second - bytes;
    s.free_ranges.erase(it);
    if (rest) s.free_ranges.emplace(offset + bytes, rest);
    s.live.emplace(offset, bytes);
    s.counters.device_live += bytes;
    s.counters.device_peak = std::max(s.counters.device_peak, s.counters.device_live);
    *ptr = s.base + offset;
    return cudaSuccess;
  }
  return fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  if (!engine::dry::in_device_range(s, p)) return fail(cudaErrorInvalidValue);
  auto it = s.live.find(static_cast<size_t>(static_cast<char*>(p) - s.base));
  if (it == s.live.end()) return fail(cudaErrorInvalidValue);
  size_t offset = it->first, bytes = it->second;
  s.counters.device_live -= bytes;
  s.live.erase(it);
  auto next = s.free_ranges.lower_bound(offset);  // coalesce with the neighbours
  if (next != s.free_ranges.end() && next->first == offset + bytes) {
    bytes += next->second;
    next = s.free_ranges.erase(next);
  }
  if (next != s.free_ranges.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      offset = prev->first;
      bytes += prev->second;
      s.free_ranges.erase(prev);
    }
  }
  s.free_ranges.emplace(offset, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  if (!free || !total) return fail(cudaErrorInvalidValue);
  auto& s = state();
  std::lock_guard lock(s.mutex);
  *total = s.spec.total_memory;
  *free = s.counters.device_live < *total ? *total - s.counters.device_live : 0;
  return cudaSuccess;
}

// ---- pinned host memory: mapped, never committed until touched -----------------------
cudaError_t cudaHostAlloc(void** p, size_t size, unsigned int /*flags*/) {
  if (!p) return fail(cudaErrorInvalidValue);
  *p = nullptr;
  if (size == 0) return cudaSuccess;
  void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return fail(cudaErrorMemoryAllocation);
  auto& s = state();
  std::lock_guard lock(s.mutex);
  s.pinned.emplace(reinterpret_cast<uintptr_t>(m), size);
  s.counters.pinned_live += size;
  s.counters.pinned_peak = std::max(s.counters.pinned_peak, s.counters.pinned_live);
  *p = m;
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t size) { return cudaHostAlloc(p, size, 0); }
cudaError_t cudaFreeHost(void* p) {
  if (!p) return cudaSuccess;
  auto& s = state();
  std::lock_guard lock(s.mutex);
  auto it = s.pinned.find(reinterpret_cast<uintptr_t>(p));
  if (it == s.pinned.end()) return fail(cudaErrorInvalidValue);
  ::munmap(p, it->second);
  s.counters.pinned_live -= it->second;
  s.pinned.erase(it);
  return cudaSuccess;
}

// ---- copies and fills: checked, not executed -----------------------------------------
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind) {
  return engine::dry::copy(dst, src, n);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t) {
  return engine::dry::copy(dst, src, n);
}
cudaError_t cudaMemset(void* p, int, size_t n) { return engine::dry::memset_checked(p, n); }
cudaError_t cudaMemsetAsync(void* p, int, size_t n, cudaStream_t) {
  return engine::dry::memset_checked(p, n);
}

// ---- streams and events: handles -----------------------------------------------------
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  if (!s) return fail(cudaErrorInvalidValue);
  *s = new (std::nothrow) CUstream_st{flags};
  return *s ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned int flags, int) {
  return cudaStreamCreateWithFlags(s, flags);
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (!s || s == cudaStreamLegacy || s == cudaStreamPerThread)
    return fail(cudaErrorInvalidResourceHandle);
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamQuery(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t e, unsigned int) {
  return e ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaStreamGetFlags(cudaStream_t s, unsigned int* flags) {
  if (!flags) return fail(cudaErrorInvalidValue);
  *flags = s && s != cudaStreamLegacy && s != cudaStreamPerThread ? s->flags : 0;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  if (!e) return fail(cudaErrorInvalidValue);
  *e = new (std::nothrow) CUevent_st{flags};
  return *e ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  return e ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventRecordWithFlags(cudaEvent_t e, cudaStream_t s, unsigned int) {
  return cudaEventRecord(e, s);
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  return e ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  return e ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  if (!ms || !a || !b) return fail(cudaErrorInvalidValue);
  *ms = 0;  // nothing ran
  return cudaSuccess;
}

// ---- kernel launches: nvcc's host stubs, checked and dropped -------------------------
void** __cudaRegisterFatBinary(void* /*fat_cubin*/) {
  static void* handle = nullptr;
  return &handle;
}
void __cudaRegisterFatBinaryEnd(void**) {}
void __cudaUnregisterFatBinary(void**) {}
void __cudaRegisterFunction(void**, const char*, char*, const char*, int, uint3*, uint3*, dim3*,
                            dim3*, int*) {}
void __cudaRegisterVar(void**, char*, char*, const char*, int, size_t, int, int) {}
void __cudaRegisterManagedVar(void**, void**, char*, const char*, int, size_t, int, int) {}
char __cudaInitModule(void**) { return 1; }

unsigned __cudaPushCallConfiguration(dim3 grid, dim3 block, size_t shared, cudaStream_t stream) {
  engine::dry::launch_configs.push_back({grid, block, shared, stream});
  return 0;
}
cudaError_t __cudaPopCallConfiguration(dim3* grid, dim3* block, size_t* shared, void* stream) {
  auto& stack = engine::dry::launch_configs;
  if (stack.empty()) return fail(cudaErrorInvalidConfiguration);
  const auto c = stack.back();
  stack.pop_back();
  *grid = c.grid;
  *block = c.block;
  *shared = c.shared;
  *static_cast<cudaStream_t*>(stream) = c.stream;
  return cudaSuccess;
}
cudaError_t __cudaGetKernel(cudaKernel_t* kernel, const void* func) {
  if (!kernel) return fail(cudaErrorInvalidValue);
  *kernel = reinterpret_cast<cudaKernel_t>(const_cast<void*>(func));  // the handle is the stub
  return cudaSuccess;
}
cudaError_t __cudaLaunchKernel(cudaKernel_t kernel, dim3 grid, dim3 block, void**, size_t shared,
                               cudaStream_t) {
  return engine::dry::check_launch(reinterpret_cast<const void*>(kernel), grid, block, shared);
}
cudaError_t __cudaLaunchKernel_ptsz(cudaKernel_t kernel, dim3 grid, dim3 block, void** args,
                                    size_t shared, cudaStream_t stream) {
  return __cudaLaunchKernel(kernel, grid, block, args, shared, stream);
}
cudaError_t cudaLaunchKernel(const void* func, dim3 grid, dim3 block, void**, size_t shared,
                             cudaStream_t) {
  return engine::dry::check_launch(func, grid, block, shared);
}

}  // extern "C"
