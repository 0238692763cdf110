// Pinned host memory where none can be had (engine/cuda/pinned_allocator.h): a CPU-only
// build, or a CUDA build on a machine without a usable GPU, reports "no GPU" with the
// reason instead of crashing. (Where a GPU is usable, test_pinned_allocator_cuda.cpp
// checks the byte counting.)
#include <gtest/gtest.h>

#include <string>

#include "engine/backend.h"
#include "engine/cuda/pinned_allocator.h"
#include "engine/error.h"

namespace {

TEST(PinnedAllocator, WithoutGpuSaysSoInOneLine) {
  std::string cuda_reason;
  if (engine::cuda_available(&cuda_reason)) GTEST_SKIP() << "a GPU is usable here";
  std::string reason;
  EXPECT_FALSE(engine::cuda::pinned_memory_available(&reason));
  EXPECT_NE(reason.find("no GPU"), std::string::npos) << reason;
  EXPECT_NE(reason.find(cuda_reason), std::string::npos) << reason;
  try {
    engine::cuda::pinned_allocator();
    ADD_FAILURE() << "pinned_allocator() returned without a GPU";
  } catch (const engine::Error& e) {
    EXPECT_EQ(std::string(e.what()), reason);
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
}

}  // namespace
