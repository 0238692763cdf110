// Pinned host memory from cudaHostAlloc, counted by engine::Allocator (see
// pinned_allocator.h). The CPU-only build's pinned_allocator() is in engine/backend.cpp.
#include "engine/cuda/pinned_allocator.h"

#include <cuda_runtime_api.h>

#include "engine/backend.h"
#include "engine/error.h"
#include "kernels/check.h"

namespace engine::cuda {

void* PinnedAllocator::system_allocate(size_t bytes) {
  if (stats_.budget && stats_.reserved + bytes > stats_.budget) return nullptr;
  void* p = nullptr;
  // Portable: the pages are pinned for every device's context, not only the current one.
  cudaError_t err = cudaHostAlloc(&p, bytes, cudaHostAllocPortable);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // not sticky: the caller turns it into OutOfBudget
    return nullptr;
  }
  CUDA_CHECK(err);
  stats_.reserved += bytes;
  return p;
}

void PinnedAllocator::system_release(void* ptr, size_t bytes) {
  CUDA_CHECK(cudaFreeHost(ptr));
  stats_.reserved -= bytes;
}

bool pinned_memory_available(std::string* reason) {
  std::string why;
  if (cuda_available(&why)) return true;
  if (reason) *reason = "no GPU for pinned host memory: " + why;
  return false;
}

Allocator& pinned_allocator() {
  std::string reason;
  if (!pinned_memory_available(&reason)) throw Error(reason);
  // Never destroyed: pinned tensors may outlive static destruction order.
  static PinnedAllocator* allocator = new PinnedAllocator();
  return *allocator;
}

}  // namespace engine::cuda
