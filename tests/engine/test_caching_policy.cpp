// The caching device allocator's size-class policy (engine/cuda/caching_allocator.h).
// Pure arithmetic: runs on the CPU in every build.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>

#include "engine/cuda/caching_allocator.h"

using engine::cuda::caching_size_class;
using engine::cuda::kLargeBlockQuantum;
using engine::cuda::kLargeBlockThreshold;
using engine::cuda::kSmallBlockQuantum;

static_assert(caching_size_class(1) == 512);
static_assert(caching_size_class(2ull << 20) == 2ull << 20);

TEST(CachingPolicy, SmallRequestsRoundTo512Bytes) {
  EXPECT_EQ(caching_size_class(1), 512u);
  EXPECT_EQ(caching_size_class(511), 512u);
  EXPECT_EQ(caching_size_class(512), 512u);
  EXPECT_EQ(caching_size_class(513), 1024u);
  EXPECT_EQ(caching_size_class(4000), 4096u);
  EXPECT_EQ(caching_size_class(kLargeBlockThreshold - 1), kLargeBlockThreshold);
  EXPECT_EQ(caching_size_class(kLargeBlockThreshold), kLargeBlockThreshold);
}

TEST(CachingPolicy, LargeRequestsRoundTo2MiB) {
  const size_t mib = 1ull << 20;
  EXPECT_EQ(caching_size_class(mib + 1), 2 * mib);
  EXPECT_EQ(caching_size_class(2 * mib - 1), 2 * mib);
  EXPECT_EQ(caching_size_class(2 * mib), 2 * mib);
  EXPECT_EQ(caching_size_class(2 * mib + 1), 4 * mib);
  EXPECT_EQ(caching_size_class(100 * mib + 3), 102 * mib);
  // Llama-3-70B sizes: an NF4 [8192, 28672] weight packs into 112 MiB exactly.
  EXPECT_EQ(caching_size_class(8192ull * 28672 / 2), 112 * mib);
}

// For any request: the class covers it, wastes less than one quantum, is a multiple
// of its quantum, and is its own class (so a released block's class is recomputable).
TEST(CachingPolicy, PropertiesOnRandomSizes) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100000; ++i) {
    size_t bytes = 1 + rng() % (size_t(1) << (1 + rng() % 36));
    size_t c = caching_size_class(bytes);
    size_t q = bytes <= kLargeBlockThreshold ? kSmallBlockQuantum : kLargeBlockQuantum;
    ASSERT_GE(c, bytes) << bytes;
    ASSERT_LT(c - bytes, q) << bytes;
    ASSERT_EQ(c % q, 0u) << bytes;
    ASSERT_EQ(caching_size_class(c), c) << bytes;
    ASSERT_LE(caching_size_class(bytes - 1 + (bytes == 1)), c) << bytes;  // monotone
  }
}
