// Pinned host memory (engine/cuda/pinned_allocator.h): every byte counted (in use, peak,
// reserved), the budget enforced with engine::OutOfBudget, and pinned tensors are host
// tensors that copy to and from the device.
#include <gtest/gtest.h>

#include <vector>

#include "engine/cuda/pinned_allocator.h"
#include "engine/error.h"
#include "engine/tensor.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"

namespace {

using engine::Device;
using engine::DType;
using engine::Tensor;

TEST(PinnedAllocatorCuda, CountsEveryByteAndFreesThem) {
  SKIP_WITHOUT_GPU();
  ASSERT_TRUE(engine::cuda::pinned_memory_available());
  engine::Allocator& pinned = engine::cuda::pinned_allocator();
  EXPECT_EQ(&pinned, &engine::cuda::pinned_allocator());
  EXPECT_NE(&pinned, &engine::cpu_allocator());
  const engine::MemoryStats before = pinned.stats();
  const size_t cpu_before = engine::cpu_allocator().stats().in_use;
  {
    Tensor a = Tensor::empty_from(pinned, {1000}, DType::F32);
    Tensor b = Tensor::empty_from(pinned, {3, 7}, DType::U8);
    EXPECT_TRUE(a.device().is_cpu());
    const engine::MemoryStats during = pinned.stats();
    EXPECT_EQ(during.in_use - before.in_use, 4000u + 21u);
    EXPECT_EQ(during.reserved - before.reserved, 4000u + 21u);
    EXPECT_GE(during.peak, during.in_use);
    EXPECT_EQ(during.allocations - before.allocations, 2u);
    EXPECT_EQ(engine::cpu_allocator().stats().in_use, cpu_before);  // not the pageable pool
  }
  EXPECT_EQ(pinned.stats().in_use, before.in_use);
  EXPECT_EQ(pinned.stats().reserved, before.reserved);
}

TEST(PinnedAllocatorCuda, BudgetRefusesWithOutOfBudget) {
  SKIP_WITHOUT_GPU();
  engine::Allocator& pinned = engine::cuda::pinned_allocator();
  const size_t reserved = pinned.stats().reserved;
  pinned.set_budget(reserved + 4096);
  Tensor fits = Tensor::empty_from(pinned, {1024}, DType::F32);
  EXPECT_THROW(Tensor::empty_from(pinned, {1}, DType::F32), engine::OutOfBudget);
  pinned.set_budget(0);
  EXPECT_EQ(pinned.stats().reserved, reserved + 4096);
}

TEST(PinnedAllocatorCuda, PinnedTensorsRoundTripThroughTheDevice) {
  SKIP_WITHOUT_GPU();
  std::vector<float> values(777);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.5f * float(i) - 3.0f;
  Tensor host = Tensor::empty_from(engine::cuda::pinned_allocator(), {777});
  for (size_t i = 0; i < values.size(); ++i) host.data<float>()[i] = values[i];
  Tensor device = host.to(Device::cuda());
  Tensor back = Tensor::empty_from(engine::cuda::pinned_allocator(), {777});
  back.copy_from(device);
  testing_support::expect_bitwise(back, Tensor::from_floats(values, {777}), "round trip");
}

}  // namespace
