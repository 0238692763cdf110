// Paged AdamW on a CUDA device (engine/cuda/paged_adamw.cpp, kernels/adamw8bit.cu) against
// the CPU: the states stream from pinned host memory through two device pages (small pages
// here, so a step has many chunks and tensors split across them).
// - 32-bit: bitwise the CPU's resident AdamW (both run kmath::adamw_update, no FMA).
// - 8-bit: bitwise the CPU reference (same kmath functions; the block maximum is exact in any
//   order, so the reduction order cannot change it).
// - every pinned byte is counted: the host buffer comes from the pinned allocator.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/cuda/pinned_allocator.h"
#include "engine/optim/adamw.h"
#include "engine/optim/paged_adamw.h"
#include "engine/rng.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"

namespace {

using engine::Device;
using engine::Shape;
using engine::Tensor;
using testing_support::expect_bitwise;

const std::vector<Shape> kShapes = {{1}, {7}, {33}, {4, 1000}, {4099}, {3, 5, 7}, {16, 520}, {5}};
const engine::optim::AdamWConfig kConfig{.lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f,
                                         .weight_decay = 0.1f};

void run_against_cpu(bool eight_bit) {
  testing_support::poison_device_pool(size_t{1} << 20);
  engine::Generator gen(42);
  std::vector<Tensor> cpu, gpu;
  for (const Shape& s : kShapes) {
    Tensor p = engine::uniform(s, -1.0f, 1.0f, gen);
    cpu.push_back(p);
    gpu.push_back(p.to(Device::cuda()));
  }
  engine::Allocator& pinned = engine::cuda::pinned_allocator();
  const size_t pinned_before = pinned.stats().in_use;
  // The CPU side: resident AdamW for 32-bit, the paged CPU reference for 8-bit.
  engine::optim::AdamW resident(cpu, kConfig);
  engine::optim::PagedAdamW cpu_paged(cpu, kConfig, eight_bit, 4096);
  engine::optim::Optimizer& reference = eight_bit ? static_cast<engine::optim::Optimizer&>(cpu_paged)
                                                  : static_cast<engine::optim::Optimizer&>(resident);
  engine::optim::PagedAdamW opt(gpu, kConfig, eight_bit, 4096);
  EXPECT_GT(opt.chunks().size(), 10u);
  EXPECT_EQ(pinned.stats().in_use - pinned_before, opt.host_bytes());
  for (int step = 1; step <= 3; ++step) {
    for (size_t i = 0; i + 1 < kShapes.size(); ++i) {  // the last parameter gets no gradient
      Tensor g = engine::uniform(kShapes[i], -2.0f, 2.0f, gen);
      cpu[i].set_grad(g);
      gpu[i].set_grad(g.to(Device::cuda()));
    }
    reference.step();
    opt.step();
    const std::string what = std::string(eight_bit ? "8-bit" : "32-bit") + " step " + std::to_string(step);
    for (size_t i = 0; i < kShapes.size(); ++i) expect_bitwise(gpu[i], cpu[i], what + " param");
    const auto got = opt.state(), want = reference.state();
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < got.size(); ++k) {
      EXPECT_EQ(got[k].first, want[k].first);
      expect_bitwise(got[k].second, want[k].second, what + " " + got[k].first);
    }
  }
}

TEST(PagedAdamWCuda, ThirtyTwoBitIsBitwiseResidentAdamW) {
  SKIP_WITHOUT_GPU();
  run_against_cpu(false);
}

TEST(PagedAdamWCuda, EightBitIsBitwiseTheCpuReference) {
  SKIP_WITHOUT_GPU();
  run_against_cpu(true);
}

}  // namespace
