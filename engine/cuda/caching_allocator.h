// The caching device allocator: every byte of device memory the engine uses comes
// from here (one instance per device, engine::allocator_for(Device::cuda(i))).
//
// Policy
// - A request is rounded up to its size class (caching_size_class): a multiple of
//   512 B up to 1 MiB, a multiple of 2 MiB above. Rounding bounds the waste (< 512 B,
//   or < 2 MiB on blocks above 1 MiB) and makes blocks of repeated shapes
//   interchangeable. Every class is its own class (the function is idempotent).
// - A released block goes on the free list of its class; the next request of the
//   same class reuses it without calling cudaMalloc (exact-class reuse: no
//   splitting or merging, so a block's class is a pure function of the byte count
//   that Allocator::release is given).
// - `reserved` counts the bytes taken from cudaMalloc (blocks in use plus cached).
//   The budget (set_budget, 0 = unlimited) bounds `reserved`: when a new cudaMalloc
//   would exceed it, or cudaMalloc itself fails with out-of-memory, all cached blocks
//   are released (empty_cache) and the request retried once; if it still does not
//   fit, system_allocate returns nullptr and Allocator::allocate throws
//   engine::OutOfBudget. A raw CUDA out-of-memory never reaches the caller.
//
// Stream assumption: a freed block is reused at once, with no event recorded. That
// is safe because all engine work runs in order on one stream (the thread's current
// stream, engine/cuda/runtime.h): a kernel that reuses the block is queued after
// every kernel that used it before. Code that uses a block from a second stream must
// synchronise that stream with the current one before the block is released.
//
// This header needs no CUDA headers, so CPU-only builds (and their tests) can use
// the policy function.
#pragma once
#include <cstddef>
#include <map>
#include <vector>

#include "engine/allocator.h"

namespace engine::cuda {

inline constexpr size_t kSmallBlockQuantum = 512;           // requests <= kLargeBlockThreshold
inline constexpr size_t kLargeBlockThreshold = 1ull << 20;  // 1 MiB
inline constexpr size_t kLargeBlockQuantum = 2ull << 20;    // 2 MiB

// The size of the block that serves a request of `bytes` (> 0). Pure: no CUDA.
constexpr size_t caching_size_class(size_t bytes) {
  size_t q = bytes <= kLargeBlockThreshold ? kSmallBlockQuantum : kLargeBlockQuantum;
  return (bytes + q - 1) / q * q;
}

class CachingAllocator final : public Allocator {
 public:
  explicit CachingAllocator(int device_index) : device_index_(device_index) {}
  ~CachingAllocator() override;  // frees cached blocks (errors ignored)
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  Device device() const override { return Device::cuda(device_index_); }
  void empty_cache() override;
  size_t cached_bytes() const;  // reserved bytes sitting in free lists
  size_t block_bytes(size_t bytes) const override { return caching_size_class(bytes); }

 protected:
  void* system_allocate(size_t bytes) override;
  void system_release(void* ptr, size_t bytes) override;

 private:
  void* cuda_malloc_locked(size_t block_bytes);  // nullptr on out-of-memory
  void release_cached_locked();

  int device_index_;
  std::map<size_t, std::vector<void*>> free_blocks_;  // size class -> cached blocks
  size_t cached_bytes_ = 0;
};

}  // namespace engine::cuda
