// The caching device allocator; the policy and the stream assumption are described
// in caching_allocator.h. All private members are used under Allocator::mutex_.
#include "engine/cuda/caching_allocator.h"

#include <cuda_runtime_api.h>

#include "kernels/check.h"

namespace engine::cuda {

namespace {

// Makes `device` current for the scope (cudaMalloc and cudaFree act on the current device).
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) CUDA_CHECK(cudaSetDevice(device));
    switched_ = previous_ != device;
  }
  ~DeviceScope() {
    if (switched_) (void)cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
  bool switched_ = false;
};

}  // namespace

CachingAllocator::~CachingAllocator() {
  // Process teardown may already have unloaded the CUDA runtime: ignore errors.
  for (auto& [size, blocks] : free_blocks_)
    for (void* p : blocks) (void)cudaFree(p);
}

size_t CachingAllocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cached_bytes_;
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked();
}

void CachingAllocator::release_cached_locked() {
  if (free_blocks_.empty()) return;
  DeviceScope scope(device_index_);
  for (auto& [size, blocks] : free_blocks_) {
    for (void* p : blocks) {
      CUDA_CHECK(cudaFree(p));
      stats_.reserved -= size;
      cached_bytes_ -= size;
    }
  }
  free_blocks_.clear();
}

void* CachingAllocator::cuda_malloc_locked(size_t block_bytes) {
  if (stats_.budget && stats_.reserved + block_bytes > stats_.budget) return nullptr;
  DeviceScope scope(device_index_);
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, block_bytes);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear it: out-of-memory is not sticky, and is handled here
    return nullptr;
  }
  CUDA_CHECK(err);  // anything else (no driver, a sticky fault) is a real error
  stats_.reserved += block_bytes;
  return p;
}

void* CachingAllocator::system_allocate(size_t bytes) {
  size_t block = caching_size_class(bytes);
  auto it = free_blocks_.find(block);
  if (it != free_blocks_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    cached_bytes_ -= block;
    return p;
  }
  if (void* p = cuda_malloc_locked(block)) return p;
  // Over the budget or out of device memory: give the cache back and try once more.
  release_cached_locked();
  return cuda_malloc_locked(block);  // nullptr -> Allocator::allocate throws OutOfBudget
}

void CachingAllocator::system_release(void* ptr, size_t bytes) {
  size_t block = caching_size_class(bytes);
  free_blocks_[block].push_back(ptr);
  cached_bytes_ += block;
}

}  // namespace engine::cuda
