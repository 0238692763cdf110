#include "engine/allocator.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "engine/error.h"
#include "engine/tensor.h"

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
  stats_.block_in_use += block_bytes(bytes);
  stats_.block_peak = std::max(stats_.block_peak, stats_.block_in_use);
  if (tracking_) {
    const int owner = owner_id_locked(memory_owner::current());
    blocks_[p] = {owner, bytes};
    owner_live_[static_cast<size_t>(owner)] += bytes;
  }
  if (stats_.in_use > stats_.peak) {
    stats_.peak = stats_.in_use;
    if (tracking_) owner_at_peak_ = owner_live_;
  }
  return p;
}

void Allocator::release(void* ptr, size_t bytes) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.in_use -= bytes;
  stats_.block_in_use -= block_bytes(bytes);
  if (tracking_) {
    auto it = blocks_.find(ptr);
    const int owner = it != blocks_.end() ? it->second.owner : owner_id_locked("untagged: before tracking");
    owner_live_[static_cast<size_t>(owner)] -= bytes;
    if (it != blocks_.end()) blocks_.erase(it);
  }
  system_release(ptr, bytes);
}

int Allocator::owner_id_locked(const std::string& owner) {
  auto [it, added] = owner_ids_.emplace(owner, static_cast<int>(owner_names_.size()));
  if (added) {
    owner_names_.push_back(owner);
    owner_live_.push_back(0);
  }
  return it->second;
}

void Allocator::set_owner_tracking(bool on) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (on == tracking_) return;
  tracking_ = on;
  blocks_.clear();
  owner_ids_.clear();
  owner_names_.clear();
  owner_live_.clear();
  owner_at_peak_.clear();
  if (!on) return;
  owner_live_[static_cast<size_t>(owner_id_locked("untagged: before tracking"))] = stats_.in_use;
  owner_at_peak_ = owner_live_;
  // Only a peak reached while tracking can be broken down.
  stats_.peak = stats_.in_use;
}

std::vector<OwnerBytes> Allocator::list_locked(const std::vector<size_t>& bytes) const {
  std::vector<OwnerBytes> out;
  for (size_t i = 0; i < bytes.size(); ++i)
    if (bytes[i] > 0) out.push_back({owner_names_[i], bytes[i]});
  std::sort(out.begin(), out.end(), [](const OwnerBytes& a, const OwnerBytes& b) {
    return a.bytes != b.bytes ? a.bytes > b.bytes : a.owner < b.owner;
  });
  return out;
}

std::vector<OwnerBytes> Allocator::live_by_owner() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return list_locked(owner_live_);
}

std::vector<OwnerBytes> Allocator::owners_at_peak() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return list_locked(owner_at_peak_);
}

void Allocator::set_owner(const void* ptr, const char* owner) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!tracking_) return;
  auto it = blocks_.find(ptr);
  if (it == blocks_.end()) return;
  const int id = owner_id_locked(owner);
  owner_live_[static_cast<size_t>(it->second.owner)] -= it->second.bytes;
  owner_live_[static_cast<size_t>(id)] += it->second.bytes;
  it->second.owner = id;
}

void set_memory_owner(const Tensor& t, const char* owner) {
  if (t.defined() && t.numel() > 0) allocator_for(t.device()).set_owner(t.raw_data(), owner);
}

// ---- owner scopes ------------------------------------------------------------------

namespace {

struct OwnerLevel {
  std::string name;  // a copy: NVTX range names may be temporaries
  bool owner;        // a MemoryOwnerScope (else an NVTX detail level)
};
thread_local std::vector<OwnerLevel> owner_stack;

}  // namespace

MemoryOwnerScope::MemoryOwnerScope(const char* owner) { owner_stack.push_back({owner, true}); }
MemoryOwnerScope::~MemoryOwnerScope() { owner_stack.pop_back(); }

namespace memory_owner {

void push_detail(const char* name) { owner_stack.push_back({name, false}); }
void pop_detail() { owner_stack.pop_back(); }

std::string current() {
  size_t first = owner_stack.size();
  while (first > 0 && !owner_stack[first - 1].owner) --first;
  std::string out = first > 0 ? owner_stack[first - 1].name : std::string("untagged");
  for (size_t i = first; i < owner_stack.size(); ++i) {
    out += i == first ? ": " : " / ";
    out += owner_stack[i].name;
  }
  return out;
}

}  // namespace memory_owner

MemoryStats Allocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void Allocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak = stats_.in_use;
  stats_.block_peak = stats_.block_in_use;
  owner_at_peak_ = owner_live_;
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
