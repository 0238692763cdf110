// Allocators with byte accounting. Every tensor's storage comes from one of these:
// current and peak bytes in use are counted, and a hard budget turns an allocation
// that would exceed it into engine::OutOfBudget (a clear one-line error) instead of
// a crash or a raw CUDA out-of-memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/dtype.h"

namespace engine {

struct MemoryStats {
  size_t in_use = 0;      // bytes held by live tensors
  size_t peak = 0;        // high-water mark of in_use since the last reset
  size_t reserved = 0;    // bytes taken from the system (in_use + cached blocks)
  size_t budget = 0;      // hard limit on reserved; 0 = unlimited
  uint64_t allocations = 0;
  // The same as in_use and peak with every block at the allocator's size class (what the
  // device must hold once cached blocks are given back).
  size_t block_in_use = 0;
  size_t block_peak = 0;
};

// Who holds memory (docs/memory.md, "Dry run"). A MemoryOwnerScope names the owner of
// what the calling thread allocates inside it ("weights", "optimizer", ...); the NVTX
// ranges opened inside it (engine/nvtx.h: phases, layers, ops) add the detail, so that
// a block of a layer's working set reads "activations: step / forward / layer 3 / ...".
// An allocator that tracks owners (Allocator::set_owner_tracking) records the owner of
// each live block; otherwise a scope costs a push and a pop on a thread-local stack.
class MemoryOwnerScope {
 public:
  explicit MemoryOwnerScope(const char* owner);
  ~MemoryOwnerScope();
  MemoryOwnerScope(const MemoryOwnerScope&) = delete;
  MemoryOwnerScope& operator=(const MemoryOwnerScope&) = delete;
};

namespace memory_owner {
// The detail levels (engine::NvtxRange calls these; the name is copied).
void push_detail(const char* name);
void pop_detail();
// "owner: detail / detail", "untagged: ..." outside every MemoryOwnerScope.
std::string current();
}  // namespace memory_owner

class Tensor;
// Hands t's block to `owner` in its allocator's tracking (no-op when not tracking).
void set_memory_owner(const Tensor& t, const char* owner);

struct OwnerBytes {
  std::string owner;  // memory_owner::current() at allocation
  size_t bytes = 0;   // as counted in MemoryStats::in_use
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
  // The bytes of the block that serves a request (its size class).
  virtual size_t block_bytes(size_t bytes) const { return bytes; }

  // Owner tracking (off by default). When on, every live block remembers its owner and
  // the live set is kept by owner, and copied whenever the peak rises. Bytes in use when
  // tracking starts count as "untagged: before tracking".
  void set_owner_tracking(bool on);
  // Owners with live bytes now, and at the peak; each list sums to in_use / peak while
  // tracking has been on since the peak was last reset (largest first).
  std::vector<OwnerBytes> live_by_owner() const;
  std::vector<OwnerBytes> owners_at_peak() const;
  // Hands a live block to another owner, e.g. a layer's output kept as a checkpoint.
  void set_owner(const void* ptr, const char* owner);

 protected:
  // Implementations return nullptr when the system refuses; they may use and
  // update `stats_.reserved` under `mutex_`.
  virtual void* system_allocate(size_t bytes) = 0;
  virtual void system_release(void* ptr, size_t bytes) = 0;
  mutable std::mutex mutex_;
  MemoryStats stats_;

 private:
  struct TrackedBlock {
    int owner;
    size_t bytes;
  };
  int owner_id_locked(const std::string& owner);
  std::vector<OwnerBytes> list_locked(const std::vector<size_t>& bytes) const;
  bool tracking_ = false;
  std::unordered_map<std::string, int> owner_ids_;
  std::vector<std::string> owner_names_;
  std::vector<size_t> owner_live_, owner_at_peak_;
  std::unordered_map<const void*, TrackedBlock> blocks_;
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
