// Owner tracking of the allocators (engine/allocator.h), which the memory report of
// train70b (--dry-run and runs on a GPU) breaks the peak down with, and the GPU table of
// the dry run (engine/gpu_spec.h).
#include <gtest/gtest.h>

#include <map>
#include <numeric>

#include "engine/allocator.h"
#include "engine/error.h"
#include "engine/gpu_spec.h"
#include "engine/nvtx.h"

namespace {

using engine::OwnerBytes;

// A fresh allocator per test (the process-wide ones carry other tests' state).
class TestAllocator final : public engine::Allocator {
 public:
  engine::Device device() const override { return engine::Device::cpu(); }
  size_t block_bytes(size_t bytes) const override { return (bytes + 99) / 100 * 100; }

 protected:
  void* system_allocate(size_t bytes) override { return ::operator new(bytes); }
  void system_release(void* p, size_t) override { ::operator delete(p); }
};

std::map<std::string, size_t> as_map(const std::vector<OwnerBytes>& list) {
  std::map<std::string, size_t> m;
  for (const OwnerBytes& b : list) m[b.owner] += b.bytes;
  return m;
}

size_t total(const std::vector<OwnerBytes>& list) {
  return std::accumulate(list.begin(), list.end(), size_t{0},
                         [](size_t s, const OwnerBytes& b) { return s + b.bytes; });
}

TEST(MemoryOwner, NamesComeFromTheScopeAndTheRangesInsideIt) {
  EXPECT_EQ(engine::memory_owner::current(), "untagged");
  engine::MemoryOwnerScope owner("activations");
  EXPECT_EQ(engine::memory_owner::current(), "activations");
  {
    engine::NvtxRange forward("forward");
    std::string layer = "layer 3";
    engine::NvtxRange range(layer.c_str());
    layer = "overwritten";  // the level keeps its own copy of the name
    EXPECT_EQ(engine::memory_owner::current(), "activations: forward / layer 3");
    engine::MemoryOwnerScope inner("gradients");  // an owner inside starts a new name
    EXPECT_EQ(engine::memory_owner::current(), "gradients");
  }
  EXPECT_EQ(engine::memory_owner::current(), "activations");
}

TEST(MemoryOwner, TheLiveSetAtThePeakSumsToThePeak) {
  TestAllocator a;
  void* before = a.allocate(50);  // allocated before tracking starts
  a.set_owner_tracking(true);
  void *w, *x, *y;
  {
    engine::MemoryOwnerScope owner("weights");
    w = a.allocate(1000);
  }
  {
    engine::MemoryOwnerScope owner("activations");
    engine::NvtxRange range("forward");
    x = a.allocate(300);
    y = a.allocate(250);
  }
  a.release(x, 300);  // the peak (1600) stays as it was
  void* z;
  {
    engine::MemoryOwnerScope owner("optimizer");
    z = a.allocate(200);  // 1500: below the peak
  }
  const engine::MemoryStats s = a.stats();
  EXPECT_EQ(s.peak, 1600u);
  EXPECT_EQ(s.block_peak, 100u + 1000u + 300u + 300u);  // each block at its size class
  const std::vector<OwnerBytes> at_peak = a.owners_at_peak();
  EXPECT_EQ(total(at_peak), s.peak);
  EXPECT_EQ(as_map(at_peak), (std::map<std::string, size_t>{{"untagged: before tracking", 50},
                                                             {"weights", 1000},
                                                             {"activations: forward", 550}}));
  EXPECT_EQ(at_peak.front().owner, "weights");  // largest first
  EXPECT_EQ(total(a.live_by_owner()), a.stats().in_use);

  engine::Allocator& base = a;
  base.set_owner(y, "checkpoints");
  EXPECT_EQ(as_map(a.live_by_owner())["checkpoints"], 250u);
  EXPECT_EQ(as_map(a.live_by_owner()).count("activations: forward"), 0u);
  a.reset_peak();
  EXPECT_EQ(total(a.owners_at_peak()), a.stats().in_use);
  for (auto [p, n] : {std::pair{before, 50}, {w, 1000}, {y, 250}, {z, 200}}) a.release(p, size_t(n));
  EXPECT_TRUE(a.live_by_owner().empty());
  EXPECT_EQ(a.stats().block_in_use, 0u);
}

TEST(MemoryOwner, WithoutTrackingNothingIsRecorded) {
  TestAllocator a;
  engine::MemoryOwnerScope owner("weights");
  void* p = a.allocate(10);
  EXPECT_TRUE(a.owners_at_peak().empty());
  a.release(p, 10);
}

TEST(GpuSpec, TheNamedGpusAndByteCounts) {
  const engine::GpuSpec a100 = engine::parse_gpu_spec("a100-80gb");
  EXPECT_EQ(a100.major, 8);
  EXPECT_EQ(a100.sms, 108);
  EXPECT_EQ(a100.shared_per_block_optin, 163u * 1024);
  EXPECT_EQ(a100.total_memory, size_t{80} << 30);
  const engine::GpuSpec h100 = engine::parse_gpu_spec("h100-80gb");
  EXPECT_EQ(h100.major, 9);
  EXPECT_EQ(h100.sms, 132);
  EXPECT_EQ(h100.shared_per_block_optin, 227u * 1024);
  EXPECT_EQ(engine::parse_gpu_spec("h200").total_memory, 143'771'000'832ull);
  const engine::GpuSpec small = engine::parse_gpu_spec("48GiB");
  EXPECT_EQ(small.total_memory, size_t{48} << 30);
  EXPECT_EQ(small.sms, 108);  // an A100 with that memory
  EXPECT_EQ(engine::parse_gpu_spec("1000").total_memory, 1000u);
  EXPECT_EQ(engine::parse_gpu_spec("2GB").total_memory, 2'000'000'000u);
  for (const char* bad : {"", "a100", "0", "12XB", "-5", "99999999999999999999GiB"})
    EXPECT_THROW(engine::parse_gpu_spec(bad), engine::InputError) << bad;
}

}  // namespace
