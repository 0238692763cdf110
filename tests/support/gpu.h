// GPU test gating: every CUDA test starts with SKIP_WITHOUT_GPU(), which skips with
// the reason (no driver, no device, CPU-only build) instead of silently passing.
#pragma once
#include <gtest/gtest.h>

#include <cstddef>
#include <string>

#include "engine/backend.h"

namespace testing_support {
// Fills cached CUDA blocks of every power-of-two size from 256 bytes to `bytes` with
// NaN and returns them to the cache, so fresh outputs start out poisoned: an element a
// kernel forgets to write shows up as NaN.
void poison_device_pool(size_t bytes);
}  // namespace testing_support

#define SKIP_WITHOUT_GPU()                                        \
  do {                                                            \
    std::string skip_reason_;                                     \
    if (!::engine::cuda_available(&skip_reason_))                 \
      GTEST_SKIP() << "no usable GPU: " << skip_reason_;          \
  } while (0)
