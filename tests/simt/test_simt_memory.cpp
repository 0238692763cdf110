// The SIMT emulator's memory model and machine: static shared memory is poison at every
// block start (as uninitialized as on a GPU), the launch limits and device properties
// come from the architecture table of the emulated GPU (arch.h, SIMT_GPU), and the
// emulator runs in a build fortified as Ubuntu's compilers fortify by default.
#include "tests/simt/simt.h"

#include "kernels/ptx.cuh"
#include "tests/simt/arch.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace {

namespace ptx = kernels::ptx;

constexpr uint32_t kPoison = 0xffffffffu;  // every shared byte at block start is 0xFF

// ---- static shared memory is poison at every block start ---------------------------------

// Each thread reads its word of a static shared array before anything writes it, then
// writes it: on a GPU the read returns whatever the SM held, so it must never look valid.
__global__ void read_static_shared_before_writing(uint32_t* out) {
  KERNELS_SHARED(uint32_t[64], tile);
  out[64 * blockIdx.x + threadIdx.x] = tile[threadIdx.x];
  tile[threadIdx.x] = 1000 * blockIdx.x + threadIdx.x;
}

// Before the poisoning, block 0 of the first launch read the zero-initialized static and
// every later block read its predecessor's values: both look like data.
TEST(SimtStaticShared, IsPoisonAtEveryBlockStartNotThePreviousBlocksValues) {
  for (int launch = 0; launch < 2; ++launch) {
    std::vector<uint32_t> out(3 * 64, 0);
    ptx::launch(read_static_shared_before_writing, dim3(3), dim3(64), 0, nullptr, out.data());
    for (size_t i = 0; i < out.size(); ++i)
      ASSERT_EQ(out[i], kPoison) << "launch " << launch << ", block " << i / 64 << ", thread "
                                 << i % 64;
  }
}

// A block sum through a static shared accumulator; the mutant forgets to zero it (the
// bug a block-reduction kernel gets when an initialization is deleted).
template <bool kZeroFirst>
__global__ void block_sums(const float* in, float* out) {
  KERNELS_SHARED(float, total);
  if (kZeroFirst && threadIdx.x == 0) total = 0.0f;
  __syncthreads();
  atomicAdd(&total, in[blockIdx.x * blockDim.x + threadIdx.x]);
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

// The mutant's sums are NaN in every block, the first included, where a zero-initialized
// static (or the previous block's total) would have let some or all of them pass.
TEST(SimtStaticShared, AMissingInitializationOfAStaticSharedAccumulatorShowsAsNaN) {
  constexpr int kBlocks = 3, kThreads = 32;
  std::vector<float> in(kBlocks * kThreads);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i % 7);  // exact sums
  std::vector<float> want(kBlocks, 0.0f);
  for (size_t i = 0; i < in.size(); ++i) want[i / kThreads] += in[i];
  std::vector<float> good(kBlocks), mutant(kBlocks);
  ptx::launch(block_sums<true>, dim3(kBlocks), dim3(kThreads), 0, nullptr, in.data(), good.data());
  ptx::launch(block_sums<false>, dim3(kBlocks), dim3(kThreads), 0, nullptr, in.data(),
              mutant.data());
  for (int b = 0; b < kBlocks; ++b) {
    EXPECT_EQ(good[b], want[b]) << "block " << b;
    EXPECT_TRUE(std::isnan(mutant[b])) << "block " << b << ": the mutant summed " << mutant[b];
  }
}

// ---- the emulated GPU's architecture ------------------------------------------------------

// What ctest selected (SIMT_GPU), or the default.
const simt::Arch& selected() {
  const char* name = std::getenv("SIMT_GPU");
  const simt::Arch* a = simt::find_arch(name != nullptr && *name != '\0' ? name : "sm_80");
  if (a == nullptr) throw std::runtime_error("unknown SIMT_GPU");
  return *a;
}

int attribute(cudaDeviceAttr attr) {
  int value = -1;
  EXPECT_EQ(cudaDeviceGetAttribute(&value, attr, 0), cudaSuccess) << "attribute " << attr;
  return value;
}

// The limits the launchers size their tiles by, as the CUDA Programming Guide gives them
// ("Technical Specifications per Compute Capability"), restated here independently.
TEST(SimtArch, TableHoldsTheProgrammingGuideSharedMemoryLimits) {
  const struct { const char* name; int major, minor; size_t optin_kib; } want[] = {
      {"sm_80", 8, 0, 163}, {"sm_86", 8, 6, 99}, {"sm_89", 8, 9, 99}, {"sm_90", 9, 0, 227}};
  for (const auto& w : want) {
    const simt::Arch* a = simt::find_arch(w.name);
    ASSERT_NE(a, nullptr) << w.name;
    EXPECT_EQ(a->major, w.major) << w.name;
    EXPECT_EQ(a->minor, w.minor) << w.name;
    EXPECT_EQ(a->shared_per_block_optin, w.optin_kib * 1024) << w.name;
    EXPECT_EQ(a->max_threads_per_block, 1024) << w.name;
  }
  EXPECT_EQ(simt::find_arch("sm_75"), nullptr);
}

TEST(SimtArch, RuntimeReportsTheSelectedArchitecture) {
  const simt::Arch& a = selected();
  EXPECT_STREQ(simt::arch().name, a.name);
  EXPECT_EQ(attribute(cudaDevAttrComputeCapabilityMajor), a.major);
  EXPECT_EQ(attribute(cudaDevAttrComputeCapabilityMinor), a.minor);
  EXPECT_EQ(attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin), int(a.shared_per_block_optin));
  EXPECT_EQ(attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor), int(a.shared_per_sm));
  EXPECT_EQ(attribute(cudaDevAttrMaxThreadsPerBlock), a.max_threads_per_block);
  EXPECT_EQ(attribute(cudaDevAttrMaxRegistersPerBlock), a.regs_per_block);
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  EXPECT_EQ(prop.major, a.major);
  EXPECT_EQ(prop.minor, a.minor);
  EXPECT_EQ(prop.sharedMemPerBlockOptin, a.shared_per_block_optin);
  EXPECT_NE(std::strstr(prop.name, a.name), nullptr) << prop.name;
}

__global__ void read_byte(const int at, unsigned char* out) {
  KERNELS_DYNAMIC_SHARED(unsigned char, smem);
  if (threadIdx.x == 0) *out = smem[at];
}

// The opt-in limit of the selected GPU, to the byte: allowed and usable, one more refused,
// and a launch above the allowance fails as on the GPU.
TEST(SimtArch, DynamicSharedUpToTheOptInLimitOfTheSelectedArchitecture) {
  const int limit = int(selected().shared_per_block_optin);
  EXPECT_NE(ptx::allow_dynamic_shared(read_byte, limit + 1), cudaSuccess);
  EXPECT_NE(cudaFuncSetAttribute(reinterpret_cast<const void*>(read_byte),
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, limit + 1),
            cudaSuccess);
  (void)cudaGetLastError();
  ASSERT_EQ(ptx::allow_dynamic_shared(read_byte, limit), cudaSuccess);
  unsigned char out = 0;
  ptx::launch(read_byte, dim3(1), dim3(32), size_t(limit), nullptr, limit - 1, &out);
  EXPECT_EQ(out, 0xff);  // the poison of the last byte
  EXPECT_THROW(ptx::launch(read_byte, dim3(1), dim3(32), size_t(limit) + 1, nullptr, 0, &out),
               std::runtime_error);
}

__global__ void static_4k_and_dynamic(float* out) {
  KERNELS_SHARED(float[1024], tile);
  KERNELS_DYNAMIC_SHARED(float, dyn);
  tile[threadIdx.x] = 1.0f;
  dyn[threadIdx.x] = 2.0f;
  out[threadIdx.x] = tile[threadIdx.x] + dyn[threadIdx.x];
}

// A block's static and dynamic shared memory share the opt-in limit, as on a GPU.
TEST(SimtArch, StaticAndDynamicSharedTogetherStayWithinTheOptInLimit) {
  const int limit = int(selected().shared_per_block_optin);
  ASSERT_EQ(ptx::allow_dynamic_shared(static_4k_and_dynamic, limit), cudaSuccess);
  std::vector<float> out(32);
  ptx::launch(static_4k_and_dynamic, dim3(1), dim3(32), size_t(limit - 4096), nullptr, out.data());
  EXPECT_EQ(out[31], 3.0f);
  EXPECT_THROW(ptx::launch(static_4k_and_dynamic, dim3(1), dim3(32), size_t(limit - 4095),
                           nullptr, out.data()),
               std::runtime_error);
}

// ---- fortified, as Ubuntu builds it -------------------------------------------------------

// Every launch above switches fibers with _longjmp; fortified, a careless switch aborts
// the process ("longjmp causes uninitialized stack frame", fiber.cpp). This test keeps
// the build honest: the other tests only prove the switch safe if they were fortified.
TEST(SimtFortify, TheEmulatorAndItsTestsAreBuiltWithFortifySource) {
#if !defined(__OPTIMIZE__)
  GTEST_SKIP() << "not optimized: glibc ignores _FORTIFY_SOURCE";
#elif !defined(_FORTIFY_SOURCE) || _FORTIFY_SOURCE < 2
  FAIL() << "built without -D_FORTIFY_SOURCE=2 (tests/simt/CMakeLists.txt)";
#endif
}

}  // namespace
