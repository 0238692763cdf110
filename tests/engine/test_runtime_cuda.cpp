// The CUDA runtime layer: copies, conversions, fills, Philox draws, streams and the
// caching allocator. Bitwise where the engine promises bitwise (copies, f32 -> bf16,
// uniform draws), bounded where it does not (normal draws).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <thread>

#include "engine/allocator.h"
#include "engine/cuda/caching_allocator.h"
#include "engine/cuda/runtime.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "kernels/math/bf16.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"

using engine::Device;
using engine::DType;
using engine::Tensor;

namespace {

const Device kGpu = Device::cuda(0);

// Random 32-bit patterns (NaNs, infinities and subnormals included), plus the
// special values and the bf16 rounding ties.
std::vector<uint32_t> test_bit_patterns(size_t n) {
  std::vector<uint32_t> v = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u,
                             0x7fa00001u, 0xffc12345u, 0x00000001u, 0x807fffffu, 0x7f7fffffu,
                             0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x3f807fffu, 0x7f7f8000u,
                             0xc0018000u, 0x00008000u, 0x00018000u};
  std::mt19937 rng(1234);
  while (v.size() < n) v.push_back(static_cast<uint32_t>(rng()));
  return v;
}

Tensor f32_from_bits(const std::vector<uint32_t>& bits) {
  Tensor t = Tensor::empty({static_cast<int64_t>(bits.size())}, DType::F32);
  std::memcpy(t.raw_data(), bits.data(), bits.size() * 4);
  return t;
}

engine::cuda::CachingAllocator& gpu_allocator() {
  return dynamic_cast<engine::cuda::CachingAllocator&>(engine::allocator_for(kGpu));
}

TEST(CudaRuntime, ReportsAvailability) {
  SKIP_WITHOUT_GPU();
  std::string reason = "unchanged";
  EXPECT_TRUE(engine::cuda_available(&reason));
  EXPECT_TRUE(reason.empty()) << reason;
  EXPECT_THROW(engine::allocator_for(Device::cuda(1 << 20)), engine::Error);
}

TEST(CudaRuntime, HostDeviceRoundTripIsBitwise) {
  SKIP_WITHOUT_GPU();
  for (int64_t n : {1, 3, 4097, 1000003}) {
    Tensor host = f32_from_bits(test_bit_patterns(static_cast<size_t>(n)));
    Tensor dev = host.to(kGpu);
    EXPECT_TRUE(dev.device().is_cuda());
    Tensor dev2 = dev.clone();  // device -> device
    Tensor back = dev2.to(Device::cpu());
    ASSERT_EQ(back.nbytes(), host.nbytes());
    EXPECT_EQ(std::memcmp(back.raw_data(), host.raw_data(), host.nbytes()), 0) << "n = " << n;
  }
}

TEST(CudaRuntime, ConvertF32ToBf16MatchesHostBitwise) {
  SKIP_WITHOUT_GPU();
  const std::vector<uint32_t> bits = test_bit_patterns(1 << 20 | 5);  // packs and a tail
  Tensor dev = f32_from_bits(bits).to(kGpu).to_dtype(DType::BF16);
  Tensor back = dev.to(Device::cpu());
  const uint16_t* got = back.data<uint16_t>();
  std::vector<uint16_t> want(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) {
    float f;
    std::memcpy(&f, &bits[i], 4);
    want[i] = kmath::float_to_bf16_bits(f);
  }
  testing_support::expect_bitwise(std::vector<uint16_t>(got, got + bits.size()), want, "bf16 bits");
}

TEST(CudaRuntime, ConvertBetweenFloatTypesMatchesHost) {
  SKIP_WITHOUT_GPU();
  std::vector<float> values(4099);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 100.0f);
  for (float& v : values) v = normal(rng);
  Tensor host = Tensor::from_floats(values, {static_cast<int64_t>(values.size())});
  for (DType via : {DType::BF16, DType::F16}) {
    Tensor want = host.to_dtype(via);                    // host conversion
    Tensor got = host.to(kGpu).to_dtype(via).to(Device::cpu());
    EXPECT_EQ(std::memcmp(got.raw_data(), want.raw_data(), want.nbytes()), 0) << dtype_name(via);
    // ... and back to f32, and across the two 16-bit types.
    Tensor want32 = want.to_dtype(DType::F32);
    Tensor got32 = want.to(kGpu).to_dtype(DType::F32).to(Device::cpu());
    EXPECT_EQ(std::memcmp(got32.raw_data(), want32.raw_data(), want32.nbytes()), 0);
    DType other = via == DType::BF16 ? DType::F16 : DType::BF16;
    Tensor want_x = want.to_dtype(other);
    Tensor got_x = want.to(kGpu).to_dtype(other).to(Device::cpu());
    EXPECT_EQ(std::memcmp(got_x.raw_data(), want_x.raw_data(), want_x.nbytes()), 0);
  }
}

TEST(CudaRuntime, PhiloxUniformMatchesCpuBitwise) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : {DType::F32, DType::BF16}) {
    const engine::Shape shape{3, 1001};
    Tensor cpu = Tensor::empty(shape, dtype);
    Tensor gpu = Tensor::empty(shape, dtype, kGpu);
    engine::fill_uniform(cpu, -0.3f, 1.7f, /*seed=*/42, /*offset=*/123456789);
    engine::fill_uniform(gpu, -0.3f, 1.7f, 42, 123456789);
    Tensor back = gpu.to(Device::cpu());
    EXPECT_EQ(std::memcmp(back.raw_data(), cpu.raw_data(), cpu.nbytes()), 0) << dtype_name(dtype);
  }
}

// Normal draws use logf/cosf, whose last bits differ between libm and CUDA: bounded,
// not bitwise. z = r cos(theta), r <= sqrt(-2 ln 2^-24) < 5.8; a few ulp of r and of
// the angle (~2^-21 absolute) bound the difference by about 5.8 * 2^-20 < 1e-5.
TEST(CudaRuntime, PhiloxNormalCloseToCpu) {
  SKIP_WITHOUT_GPU();
  Tensor cpu = Tensor::empty({4096});
  Tensor gpu = Tensor::empty({4096}, DType::F32, kGpu);
  engine::fill_normal(cpu, 0.5f, 2.0f, 7, 99);
  engine::fill_normal(gpu, 0.5f, 2.0f, 7, 99);
  std::vector<float> a = cpu.to_floats(), b = gpu.to_floats();
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_NEAR(b[i], a[i], 2.0 * 1e-5 + 1e-6 * std::fabs(a[i])) << "element " << i;
}

TEST(CudaRuntime, FillAndAccumulate) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::I32, DType::U8}) {
    Tensor t = Tensor::full({1037}, 3.0f, dtype, kGpu);
    for (float v : t.to_floats()) ASSERT_EQ(v, 3.0f) << dtype_name(dtype);
  }
  for (DType dtype : {DType::F32, DType::BF16}) {
    Tensor acc = Tensor::full({2, 517}, 1.5f, dtype, kGpu);
    Tensor src = Tensor::full({2, 517}, -0.25f, dtype, kGpu);
    engine::backend::accumulate(acc, src);
    for (float v : acc.to_floats()) ASSERT_EQ(v, 1.25f) << dtype_name(dtype);
  }
}

TEST(CudaRuntime, CurrentStreamIsPerThreadAndNonBlocking) {
  SKIP_WITHOUT_GPU();
  cudaStream_t mine = engine::cuda::current_stream();
  ASSERT_NE(mine, nullptr);
  EXPECT_EQ(engine::cuda::current_stream(), mine);
  unsigned flags = 0;
  ASSERT_EQ(cudaStreamGetFlags(mine, &flags), cudaSuccess);
  EXPECT_EQ(flags & cudaStreamNonBlocking, static_cast<unsigned>(cudaStreamNonBlocking));
  cudaStream_t other = nullptr;
  std::thread([&] { other = engine::cuda::current_stream(); }).join();
  EXPECT_NE(other, nullptr);
  EXPECT_NE(other, mine);
}

TEST(CachingAllocator, ReusesAFreedBlock) {
  SKIP_WITHOUT_GPU();
  auto& alloc = gpu_allocator();
  const size_t bytes = (3ull << 20) + 100;  // class 4 MiB
  void* first = nullptr;
  {
    Tensor t = Tensor::empty({static_cast<int64_t>(bytes)}, DType::U8, kGpu);
    first = t.raw_data();
  }
  const size_t reserved = alloc.stats().reserved;
  EXPECT_GE(alloc.cached_bytes(), engine::cuda::caching_size_class(bytes));
  Tensor again = Tensor::empty({static_cast<int64_t>(bytes)}, DType::U8, kGpu);
  EXPECT_EQ(again.raw_data(), first);           // the cached block, not a new one
  EXPECT_EQ(alloc.stats().reserved, reserved);  // no cudaMalloc
}

TEST(CachingAllocator, CountsInUseAndPeak) {
  SKIP_WITHOUT_GPU();
  auto& alloc = gpu_allocator();
  const engine::MemoryStats base = alloc.stats();
  alloc.reset_peak();
  {
    Tensor a = Tensor::empty({1000}, DType::F32, kGpu);      // 4000 B
    Tensor b = Tensor::empty({1 << 20}, DType::BF16, kGpu);  // 2 MiB
    EXPECT_EQ(alloc.stats().in_use, base.in_use + 4000 + (2u << 20));
    EXPECT_GE(alloc.stats().reserved, alloc.stats().in_use);
    a = Tensor();
    EXPECT_EQ(alloc.stats().in_use, base.in_use + (2u << 20));
    EXPECT_EQ(alloc.stats().peak, base.in_use + 4000 + (2u << 20));
  }
  EXPECT_EQ(alloc.stats().in_use, base.in_use);
  EXPECT_EQ(alloc.stats().allocations, base.allocations + 2);
}

TEST(CachingAllocator, BudgetExceededThrowsOutOfBudgetAndNothingLeaks) {
  SKIP_WITHOUT_GPU();
  auto& alloc = gpu_allocator();
  alloc.empty_cache();
  const engine::MemoryStats base = alloc.stats();
  ASSERT_EQ(alloc.cached_bytes(), 0u);
  const size_t budget = base.reserved + (8ull << 20);
  alloc.set_budget(budget);
  {
    Tensor fits = Tensor::empty({6 << 20}, DType::U8, kGpu);  // 6 MiB of 8
    Tensor cached = Tensor::empty({2 << 20}, DType::U8, kGpu);
    cached = Tensor();  // 2 MiB sits in the cache; the next request must evict it
    try {
      Tensor too_big = Tensor::empty({4 << 20}, DType::U8, kGpu);
      ADD_FAILURE() << "allocated past the budget";
    } catch (const engine::OutOfBudget& e) {
      std::string message = e.what();
      EXPECT_NE(message.find(engine::format_bytes(budget)), std::string::npos) << message;
      EXPECT_NE(message.find("budget"), std::string::npos) << message;
    }
    EXPECT_EQ(alloc.cached_bytes(), 0u);  // the retry released the cache first
    EXPECT_EQ(alloc.stats().in_use, base.in_use + (6u << 20));
    Tensor small = Tensor::empty({2 << 20}, DType::U8, kGpu);  // still fits: 6 + 2 MiB
  }
  alloc.set_budget(0);
  EXPECT_EQ(alloc.stats().in_use, base.in_use);
  alloc.empty_cache();
  EXPECT_EQ(alloc.stats().reserved, base.reserved);
  EXPECT_EQ(alloc.cached_bytes(), 0u);
}

TEST(CachingAllocator, AHugeRequestIsOutOfBudgetNotACudaError) {
  SKIP_WITHOUT_GPU();
  // More than any GPU has: cudaMalloc fails, the allocator turns it into OutOfBudget.
  EXPECT_THROW(Tensor::empty({int64_t(1) << 50}, DType::U8, kGpu), engine::OutOfBudget);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // no error left behind for the next call
}

}  // namespace
