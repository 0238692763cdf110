// GPU test gating: every CUDA test starts with SKIP_WITHOUT_GPU(), which skips with
// the reason (no driver, no device, CPU-only build) instead of silently passing.
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "engine/backend.h"

#define SKIP_WITHOUT_GPU()                                        \
  do {                                                            \
    std::string skip_reason_;                                     \
    if (!::engine::cuda_available(&skip_reason_))                 \
      GTEST_SKIP() << "no usable GPU: " << skip_reason_;          \
  } while (0)
