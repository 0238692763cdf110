#include "engine/allocator.h"

#include <cstdio>
#include <cstdlib>

#include "engine/error.h"

namespace engine {

std::string format_bytes(size_t bytes) {
  char buf[32];
  if (bytes >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(1ull << 30));
  else if (bytes >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", bytes / double(1ull << 20));
  else std::snprintf(buf, sizeof buf, "%zu B", bytes);
  return buf;
}

void* Allocator::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  std::lock_guard<std::mutex> lock(mutex_);
  void* p = system_allocate(bytes);
  if (!p)
    throw OutOfBudget(detail::concat(
        stats_.budget ? "out of " + device().str() + " memory budget"
                      : "out of " + device().str() + " memory (the device refused)",
        ": requested ", format_bytes(bytes), " with ", format_bytes(stats_.in_use), " in use, ",
        format_bytes(stats_.reserved), " reserved, budget ",
        stats_.budget ? format_bytes(stats_.budget) : "unlimited"));
  stats_.in_use += bytes;
  stats_.allocations += 1;
  if (stats_.in_use > stats_.peak) stats_.peak = stats_.in_use;
  return p;
}

void Allocator::release(void* ptr, size_t bytes) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.in_use -= bytes;
  system_release(ptr, bytes);
}

MemoryStats Allocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void Allocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak = stats_.in_use;
}

void Allocator::set_budget(size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.budget = bytes;
}

void* CpuAllocator::system_allocate(size_t bytes) {
  if (stats_.budget && stats_.reserved + bytes > stats_.budget) return nullptr;
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p) stats_.reserved += bytes;
  return p;
}

void CpuAllocator::system_release(void* ptr, size_t bytes) {
  std::free(ptr);
  stats_.reserved -= bytes;
}

Allocator& cpu_allocator() {
  static CpuAllocator a;
  return a;
}

}  // namespace engine
