// Allocators with byte accounting. Every tensor's storage comes from one of these:
// current and peak bytes in use are counted, and a hard budget turns an allocation
// that would exceed it into engine::OutOfBudget (a clear one-line error) instead of
// a crash or a raw CUDA out-of-memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "engine/dtype.h"

namespace engine {

struct MemoryStats {
  size_t in_use = 0;      // bytes held by live tensors
  size_t peak = 0;        // high-water mark of in_use since the last reset
  size_t reserved = 0;    // bytes taken from the system (in_use + cached blocks)
  size_t budget = 0;      // hard limit on reserved; 0 = unlimited
  uint64_t allocations = 0;
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  void* allocate(size_t bytes);
  void release(void* ptr, size_t bytes);
  MemoryStats stats() const;
  void reset_peak();
  void set_budget(size_t bytes);
  virtual Device device() const = 0;
  // Returns cached blocks to the system (no-op for allocators that do not cache).
  virtual void empty_cache() {}

 protected:
  // Implementations return nullptr when the system refuses; they may use and
  // update `stats_.reserved` under `mutex_`.
  virtual void* system_allocate(size_t bytes) = 0;
  virtual void system_release(void* ptr, size_t bytes) = 0;
  mutable std::mutex mutex_;
  MemoryStats stats_;
};

// 64-byte aligned host memory.
class CpuAllocator final : public Allocator {
 public:
  Device device() const override { return Device::cpu(); }

 protected:
  void* system_allocate(size_t bytes) override;
  void system_release(void* ptr, size_t bytes) override;
};

Allocator& cpu_allocator();
// The allocator for a device; the CUDA one exists only in CUDA builds.
Allocator& allocator_for(Device device);

std::string format_bytes(size_t bytes);

}  // namespace engine
