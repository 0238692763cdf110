// Tensors, shapes, dtypes and the CPU allocator's accounting.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/tensor.h"
#include "kernels/math/bf16.h"

using namespace engine;

TEST(Shape, RankNumelAndErrors) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s[-1], 4);
  EXPECT_EQ(s.rows(), 6);
  EXPECT_EQ(Shape{}.numel(), 1);
  EXPECT_THROW((Shape{1, 2, 3, 4, 5}), Error);
  EXPECT_THROW(s[3], Error);
}

TEST(Dtype, BytesIncludingPackedNf4) {
  EXPECT_EQ(dtype_bytes(DType::F32, 3), 12u);
  EXPECT_EQ(dtype_bytes(DType::BF16, 3), 6u);
  EXPECT_EQ(dtype_bytes(DType::NF4, 3), 2u);  // two values per byte, rounded up
  EXPECT_EQ(dtype_bytes(DType::NF4, 64), 32u);
}

TEST(Tensor, FromFloatsViewAndClone) {
  Tensor t = Tensor::from_floats({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor v = t.view({3, 2});
  v.data<float>()[0] = 42;  // a view shares storage
  EXPECT_EQ(t.data<float>()[0], 42);
  Tensor c = t.clone();
  c.data<float>()[1] = -1;  // a clone does not
  EXPECT_EQ(t.data<float>()[1], 2);
  EXPECT_THROW(t.view({4}), Error);
  EXPECT_THROW(t.data<int16_t>(), Error);
}

TEST(Tensor, Bf16ConversionRoundsToNearestEven) {
  // 1 + 2^-8 lies exactly halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even (1).
  Tensor t = Tensor::from_floats({1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -2.5f}, {3});
  std::vector<float> back = t.to_dtype(DType::BF16).to_floats();
  EXPECT_EQ(back[0], 1.0f);
  EXPECT_EQ(back[1], 1.0f + 4.0f / 256);
  EXPECT_EQ(back[2], -2.5f);
  EXPECT_EQ(kmath::float_to_bf16_bits(NAN) & 0x7f80, 0x7f80);
}

TEST(Allocator, CountsCurrentAndPeakAndEnforcesBudget) {
  Allocator& a = cpu_allocator();
  size_t base = a.stats().in_use;
  a.reset_peak();
  {
    Tensor t = Tensor::empty({1024});
    EXPECT_EQ(a.stats().in_use, base + 4096);
    {
      Tensor u = Tensor::empty({256});
      EXPECT_EQ(a.stats().peak, base + 5120);
    }
    EXPECT_EQ(a.stats().in_use, base + 4096);
  }
  EXPECT_EQ(a.stats().in_use, base);
  a.set_budget(a.stats().reserved + 1000);
  EXPECT_THROW(Tensor::empty({1000}), OutOfBudget);
  try {
    Tensor::empty({1000});
  } catch (const OutOfBudget& e) {
    EXPECT_NE(std::string(e.what()).find("budget"), std::string::npos);
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
  a.set_budget(0);
  EXPECT_NO_THROW(Tensor::empty({1000}));
}
