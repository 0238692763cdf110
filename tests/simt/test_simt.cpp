// The SIMT emulator's own tests: each CUDA primitive the kernels use, run by the emulator
// (tests/simt) through kernels/ptx.cuh, against its definition in the CUDA programming
// guide or the PTX ISA. Every expected value is computed here on the host, never by the
// emulator. Covered: the built-in indices and the warp a thread belongs to, __syncthreads,
// the three shuffles (widths 32 and 8; divergent lanes with their own masks), ldmatrix.x4
// (plain and .trans) and mma.sync m16n8k16 bf16 (fragment layouts and arithmetic),
// cvt.rn.bf16x2, the cp.async groups, that the warp-serial schedule exposes a missing
// __syncthreads, and the launch errors.
#include "tests/simt/simt.h"

#include "kernels/ptx.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace ptx = kernels::ptx;

constexpr unsigned kFull = 0xffffffffu;
constexpr uint32_t kPoison = 0xffffffffu;  // every dynamic shared byte at block start is 0xFF

// Index of the first element where got and want differ, or -1.
template <class T>
long first_difference(const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size()) return 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(got[i] == want[i])) return static_cast<long>(i);
  return -1;
}

// ---- indices and the warp a thread belongs to ---------------------------------------------

constexpr int kIndexFields = 13;

// Each thread writes blockIdx, threadIdx, blockDim, gridDim and, last, the CUDA linear id of
// the lane mirrored in its warp (lane 31 - own lane): CUDA numbers threads x-fastest and a
// warp is 32 consecutive linear ids, so that value must be the own id with bits 0-4 flipped.
__global__ void record_indices(unsigned* out) {
  const unsigned id = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned fields[kIndexFields] = {
      blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z, blockDim.x,
      blockDim.y, blockDim.z, gridDim.x,  gridDim.y,   gridDim.z,
      __shfl_sync(kFull, id, 31 - static_cast<int>(id % 32))};
  std::copy(fields, fields + kIndexFields,
            out + kIndexFields * (block * blockDim.x * blockDim.y * blockDim.z + id));
}

TEST(SimtIndices, EveryThreadOfA3DGridSeesItsCudaIndicesXFastest) {
  const dim3 grid(3, 2, 2), block(8, 4, 2);
  std::vector<unsigned> out(kIndexFields * 12 * 64, ~0u), want;
  ptx::launch(record_indices, grid, block, 0, nullptr, out.data());
  for (unsigned bz = 0; bz < 2; ++bz)
    for (unsigned by = 0; by < 2; ++by)
      for (unsigned bx = 0; bx < 3; ++bx) {
        unsigned id = 0;  // counts x-fastest
        for (unsigned tz = 0; tz < 2; ++tz)
          for (unsigned ty = 0; ty < 4; ++ty)
            for (unsigned tx = 0; tx < 8; ++tx, ++id)
              want.insert(want.end(), {bx, by, bz, tx, ty, tz, 8u, 4u, 2u, 3u, 2u, 2u, id ^ 31u});
      }
  EXPECT_EQ(first_difference(out, want), -1);
}

// ---- __syncthreads and the shuffles -------------------------------------------------------

__global__ void reverse_through_shared(const int* in, int* out) {
  KERNELS_SHARED(int[256], tile);
  tile[threadIdx.x] = in[threadIdx.x];
  __syncthreads();
  out[threadIdx.x] = tile[255 - threadIdx.x];
}

TEST(SimtSyncthreads, BlockReversesAnArrayThroughStaticShared) {
  std::vector<int> in(256), out(256), want(256);
  for (int i = 0; i < 256; ++i) in[i] = 7 * i + 1;
  for (int i = 0; i < 256; ++i) want[i] = in[255 - i];
  ptx::launch(reverse_through_shared, dim3(1), dim3(256), 0, nullptr, in.data(), out.data());
  EXPECT_EQ(first_difference(out, want), -1);
}

constexpr int kShuffles = 6;

__global__ void shuffles(const int* in, int* out) {
  const int lane = static_cast<int>(threadIdx.x), v = in[lane];
  int* o = out + kShuffles * lane;
  o[0] = __shfl_xor_sync(kFull, v, 5);
  o[1] = __shfl_xor_sync(kFull, v, 9, 8);  // lane ^ 9 lies in the next or previous segment
  o[2] = __shfl_down_sync(kFull, v, 3);
  o[3] = __shfl_down_sync(kFull, v, 3, 8);
  o[4] = __shfl_sync(kFull, v, 3 * lane + 1);  // source lanes >= width wrap modulo width
  o[5] = __shfl_sync(kFull, v, 3 * lane + 2, 8);
}

// The programming guide's rules: a width-w shuffle works in segments of w lanes; a source
// outside [0, 32) of shfl_sync is taken modulo width within the own segment; down and xor
// return the own value when the source lies beyond the end of the own segment (xor may
// read an earlier segment).
TEST(SimtShuffles, XorDownAndIndexedFollowTheProgrammingGuide) {
  std::vector<int> in(32), out(32 * kShuffles), want;
  for (int l = 0; l < 32; ++l) in[l] = 100 + l * l;
  ptx::launch(shuffles, dim3(1), dim3(32), 0, nullptr, in.data(), out.data());
  for (int l = 0; l < 32; ++l) {
    const int segment_end = l | 7;  // last lane of l's width-8 segment
    const int xor8 = l ^ 9, down8 = l + 3;
    want.insert(want.end(), {in[l ^ 5], in[xor8 > segment_end ? l : xor8],
                             in[l + 3 < 32 ? l + 3 : l], in[down8 > segment_end ? l : down8],
                             in[(3 * l + 1) % 32], in[(l & ~7) + (3 * l + 2) % 8]});
  }
  EXPECT_EQ(first_difference(out, want), -1);
}

// A divergent warp: lanes 0-15 shuffle twice among themselves, lanes 16-31 once, each side
// with its own mask. The sides meet at separate barriers; neither may release the other.
__global__ void shuffles_of_divergent_halves(int* out) {
  const int lane = static_cast<int>(threadIdx.x);
  if (lane < 16) {
    const int x = __shfl_sync(0x0000ffffu, 100 + lane, 0);
    out[lane] = 1000 * x + __shfl_sync(0x0000ffffu, 200 + lane, 1);
  } else {
    out[lane] = __shfl_sync(0xffff0000u, 300 + lane, 17);
  }
}

TEST(SimtShuffles, DivergentHalvesShuffleWithTheirOwnMasks) {
  std::vector<int> out(32), want(32);
  for (int l = 0; l < 32; ++l) want[l] = l < 16 ? 1000 * 100 + 201 : 317;
  ptx::launch(shuffles_of_divergent_halves, dim3(1), dim3(32), 0, nullptr, out.data());
  EXPECT_EQ(first_difference(out, want), -1);
}

// ---- ldmatrix.x4 and mma.sync.m16n8k16 -------------------------------------------------

// One warp: C = A B with A 16x16 row-major and B 16(k)x16(n), given either as X[n][k]
// (b_is_k_by_n false: ldmatrix of rows-as-n) or as B[k][n] itself (ldmatrix .trans).
// The accumulators start at c_init (mma adds to them); writes every lane's raw accumulators:
// frags[8 lane + 0..3] for n 0-7, frags[8 lane + 4..7] for n 8-15.
__global__ void mma_16x16x16(const uint16_t* a, const uint16_t* b, bool b_is_k_by_n, float c_init,
                             float* frags) {
  KERNELS_DYNAMIC_SHARED(uint16_t, smem);  // A then B, 32-byte rows
  const int lane = static_cast<int>(threadIdx.x);
  for (int i = lane; i < 512; i += 32) smem[i] = i < 256 ? a[i] : b[i - 256];
  __syncthreads();
  uint32_t af[4], bf[4];
  ptx::ldmatrix_x4(af, smem + 16 * (lane % 16) + 8 * (lane / 16));
  const uint16_t* sb = smem + 256;
  if (b_is_k_by_n) {  // matrices {k 0-7, n 0-7}, {k 8-15, n 0-7}, {k 0-7, n 8-15}, {k 8-15, n 8-15}
    ptx::ldmatrix_x4_trans(bf, sb + 16 * (lane % 16) + 8 * (lane / 16));
  } else {  // matrices {n 0-7, k 0-7}, {n 0-7, k 8-15}, {n 8-15, k 0-7}, {n 8-15, k 8-15}
    const int m = lane / 8;
    ptx::ldmatrix_x4(bf, sb + 16 * (lane % 8 + 8 * (m / 2)) + 8 * (m % 2));
  }
  float c[2][4] = {{c_init, c_init, c_init, c_init}, {c_init, c_init, c_init, c_init}};
  ptx::mma_bf16(c[0], af, bf[0], bf[1]);
  ptx::mma_bf16(c[1], af, bf[2], bf[3]);
  for (int i = 0; i < 8; ++i) frags[8 * lane + i] = c[i / 4][i % 4];
}

uint16_t bf16_bits(float exact) {  // `exact` must be a bf16 value
  const uint32_t u = std::bit_cast<uint32_t>(exact);
  EXPECT_EQ(u & 0xffffu, 0u) << exact << " is not a bf16 value";
  return static_cast<uint16_t>(u >> 16);
}
float bf16_value(uint16_t bits) { return std::bit_cast<float>(uint32_t{bits} << 16); }

std::vector<float> run_mma(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b,
                           bool b_is_k_by_n, float c_init = 0.0f) {
  std::vector<float> frags(32 * 8, std::numeric_limits<float>::quiet_NaN());
  ptx::launch(mma_16x16x16, dim3(1), dim3(32), 1024, nullptr, a.data(), b.data(), b_is_k_by_n,
              c_init, frags.data());
  return frags;
}

// C[m][n] from the accumulators, by ptx.cuh's layout (checked by FragmentPlacement below).
float c_at(const std::vector<float>& frags, int m, int n) {
  const int g = m % 8, t = (n % 8) / 2;
  return frags[8 * (4 * g + t) + 4 * (n / 8) + 2 * (m / 8) + n % 2];
}

// A permutation matrix A[i][p(i)] = 1 and B[k][n] = X[n][k] = 16 n + k + 1 (distinct, exact
// in bf16), accumulated onto 0.5: C[m][n] = 0.5 + X[n][p(m)] exactly, so a misplaced
// accumulator, or a row of A or a column of B taken from the wrong place, shows.
TEST(SimtTensorCores, FragmentPlacementOfTheAccumulators) {
  // Not symmetric (catches a transposed A) and not affine (an affine p(i + 8) = p(i) ^ 8
  // would hide a swap of the A registers a1 and a2).
  constexpr int kP[16] = {3, 14, 7, 0, 11, 9, 1, 12, 5, 15, 2, 8, 13, 6, 10, 4};
  auto p = [&](int i) { return kP[i]; };
  std::vector<uint16_t> a(256, 0), x(256);
  for (int i = 0; i < 16; ++i) a[16 * i + p(i)] = bf16_bits(1.0f);
  for (int n = 0; n < 16; ++n)
    for (int k = 0; k < 16; ++k) x[16 * n + k] = bf16_bits(static_cast<float>(16 * n + k + 1));
  const std::vector<float> frags = run_mma(a, x, false, 0.5f);
  auto c = [&](int m, int n) { return 0.5f + static_cast<float>(16 * n + p(m) + 1); };
  for (int g = 0; g < 8; ++g)
    for (int t = 0; t < 4; ++t)
      for (int tile = 0; tile < 2; ++tile)
        for (int i = 0; i < 4; ++i)  // c0, c1 = C[g][2t], C[g][2t+1]; c2, c3: row g + 8
          EXPECT_EQ(frags[8 * (4 * g + t) + 4 * tile + i],
                    c(g + 8 * (i / 2), 8 * tile + 2 * t + i % 2))
              << "lane " << 4 * g + t << ", n tile " << tile << ", c" << i;
}

// Random bf16 values (8-bit significands, exponents -3..3) make the fp32 sums inexact.
// Bound: a product of two bf16 values is exact in fp32 (16 <= 24 significand bits), so only
// the 15 additions round, each by at most eps/2 times a partial sum <= S = sum |a||b|; any
// order is within 15 (eps/2) S of the exact sum, two orders within 15 eps S <= 16 eps S.
TEST(SimtTensorCores, MmaOfLdmatrixFragmentsIsTheMatrixProductBothBLayouts) {
  std::mt19937 rng(2024);
  std::uniform_int_distribution<int> significand(128, 255), exponent(-3, 3), sign(0, 1);
  auto random_bf16 = [&] {
    const float v = std::ldexp(significand(rng) / 128.0f, exponent(rng));
    return bf16_bits(sign(rng) ? -v : v);
  };
  std::vector<uint16_t> a(256), x(256), b_kn(256);
  for (auto& v : a) v = random_bf16();
  for (auto& v : x) v = random_bf16();
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 16; ++n) b_kn[16 * k + n] = x[16 * n + k];
  const std::vector<float> rows_as_n = run_mma(a, x, false), trans = run_mma(a, b_kn, true);
  const float eps = std::numeric_limits<float>::epsilon();
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float sum = 0.0f, magnitude = 0.0f;
      for (int k = 0; k < 16; ++k) {
        const float product = bf16_value(a[16 * m + k]) * bf16_value(x[16 * n + k]);
        sum += product;
        magnitude += std::fabs(product);
      }
      const float bound = 16 * eps * magnitude;
      EXPECT_NEAR(c_at(rows_as_n, m, n), sum, bound) << "C[" << m << "][" << n << "]";
      EXPECT_NEAR(c_at(trans, m, n), sum, bound) << "C[" << m << "][" << n << "], .trans";
    }
}

// cvt.rn.bf16x2.f32: round to nearest, ties to even, lo in bits 0-15.
TEST(SimtPackBf16, LoInTheLowHalfRoundedToNearestEven) {
  auto f = [](uint32_t bits) { return std::bit_cast<float>(bits); };
  EXPECT_EQ(ptx::pack_bf16(1.0f, -2.0f), 0xc0003f80u);
  EXPECT_EQ(ptx::pack_bf16(f(0x3f808000u), f(0x3f818000u)), 0x3f823f80u);  // ties: to even
  EXPECT_EQ(ptx::pack_bf16(f(0x3f808001u), f(0x3f817fffu)), 0x3f813f81u);  // off ties: nearest
}

// ---- cp.async ----------------------------------------------------------------------------

// 32 threads, each copying its 16 bytes of a 128-word tile in one group; every fourth
// thread passes valid = false.
__global__ void cp_async_one_group(const uint32_t* src, uint32_t* before, uint32_t* after) {
  KERNELS_DYNAMIC_SHARED(uint32_t, tile);
  const unsigned t = threadIdx.x;
  ptx::cp_async16(tile + 4 * t, src + 4 * t, t % 4 != 3);
  for (unsigned j = 0; j < 4; ++j) before[4 * t + j] = tile[4 * t + j];
  ptx::cp_async_commit();
  ptx::cp_async_wait<0>();
  __syncthreads();
  for (unsigned i = t; i < 128; i += 32) after[i] = tile[i];  // other threads' copies too
}

TEST(SimtCpAsync, TileIsPoisonBeforeWaitAndDataOrZerosAfterWaitAndBarrier) {
  std::vector<uint32_t> src(128), before(128), after(128), want(128);
  for (uint32_t i = 0; i < 128; ++i) src[i] = 0x1000 + i;
  for (uint32_t i = 0; i < 128; ++i) want[i] = (i / 4) % 4 != 3 ? src[i] : 0;
  ptx::launch(cp_async_one_group, dim3(1), dim3(32), 512, nullptr, src.data(), before.data(),
              after.data());
  EXPECT_EQ(first_difference(before, std::vector<uint32_t>(128, kPoison)), -1);
  EXPECT_EQ(first_difference(after, want), -1);
}

// Group 0 fills words 0-127 (16-byte copies), group 1 words 128-255 (4-byte copies); each
// thread reads back its own words after cp.async.wait_group 1, then after wait_group 0.
__global__ void cp_async_two_groups(const uint32_t* src, uint32_t* older, uint32_t* newer,
                                    uint32_t* newer_after_wait0) {
  KERNELS_DYNAMIC_SHARED(uint32_t, tile);
  const unsigned t = threadIdx.x;
  ptx::cp_async16(tile + 4 * t, src + 4 * t);
  ptx::cp_async_commit();
  for (unsigned j = 0; j < 4; ++j) ptx::cp_async4(tile + 128 + 4 * t + j, src + 128 + 4 * t + j);
  ptx::cp_async_commit();
  ptx::cp_async_wait<1>();
  for (unsigned j = 0; j < 4; ++j) older[4 * t + j] = tile[4 * t + j];
  for (unsigned j = 0; j < 4; ++j) newer[4 * t + j] = tile[128 + 4 * t + j];
  ptx::cp_async_wait<0>();
  for (unsigned j = 0; j < 4; ++j) newer_after_wait0[4 * t + j] = tile[128 + 4 * t + j];
}

TEST(SimtCpAsync, WaitGroupOneLandsTheOlderGroupAndLeavesTheNewestPending) {
  std::vector<uint32_t> src(256), older(128), newer(128), newer_after(128);
  for (uint32_t i = 0; i < 256; ++i) src[i] = 0x3000 + i;
  ptx::launch(cp_async_two_groups, dim3(1), dim3(32), 1024, nullptr, src.data(), older.data(),
              newer.data(), newer_after.data());
  EXPECT_EQ(first_difference(older, std::vector<uint32_t>(src.begin(), src.begin() + 128)), -1);
  EXPECT_EQ(first_difference(newer, std::vector<uint32_t>(128, kPoison)), -1);
  EXPECT_EQ(first_difference(newer_after, std::vector<uint32_t>(src.begin() + 128, src.end())), -1);
}

// ---- the schedule exposes a missing __syncthreads -----------------------------------------

// 64 threads: warp 0 writes a dynamic shared tile, warp 1 reads it.
template <bool kBarrier>
__global__ void warp0_writes_warp1_reads(uint32_t* out) {
  KERNELS_DYNAMIC_SHARED(uint32_t, tile);
  const unsigned t = threadIdx.x;
  if (t < 32) tile[t] = 1000 * blockIdx.x + t;
  if constexpr (kBarrier) __syncthreads();
  if (t >= 32) out[32 * blockIdx.x + t - 32] = tile[t - 32];
}

// Blocks of the grid run their warps in opposite orders, so without the barrier the
// consumer warp runs first in at least one block (block 1) and reads the poison.
TEST(SimtSchedule, MissingSyncthreadsBetweenWarpsReadsWrongValuesInSomeBlock) {
  std::vector<uint32_t> want(64);
  for (uint32_t i = 0; i < 64; ++i) want[i] = 1000 * (i / 32) + i % 32;
  for (const bool barrier : {false, true}) {
    std::vector<uint32_t> out(64, 0);
    auto kernel = barrier ? warp0_writes_warp1_reads<true> : warp0_writes_warp1_reads<false>;
    ptx::launch(kernel, dim3(2), dim3(64), 128, nullptr, out.data());
    int wrong_blocks = 0;
    for (int b = 0; b < 2; ++b)
      wrong_blocks += !std::equal(&out[32 * b], &out[32 * b + 32], &want[32 * b]);
    if (barrier) {
      EXPECT_EQ(wrong_blocks, 0) << "with __syncthreads";
    } else {
      EXPECT_GE(wrong_blocks, 1) << "without __syncthreads";
    }
  }
}

// ---- launch errors --------------------------------------------------------------------------

// The message of the std::runtime_error that f throws; "" when it throws none.
template <class F>
std::string runtime_error_message(F f) {
  try { f(); } catch (const std::runtime_error& e) { return e.what(); }
  return "";
}

// Lanes 0-15 of each warp wait at __syncthreads, lanes 16-31 at a __syncwarp that needs
// lanes 0-15 too: neither barrier can complete. (Threads that exit instead do not hold a
// block barrier: PTX's bar.sync waits for the non-exited threads only.)
__global__ void half_block_at_syncthreads() {
  if (threadIdx.x % 32 < 16) __syncthreads();
  __syncwarp();
}

__global__ void upper_warp_exits_before_syncthreads(int* out) {
  if (threadIdx.x >= 32) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

TEST(SimtErrors, SyncthreadsReachedByHalfTheBlockDeadlocksUnlessTheRestExited) {
  const std::string message = runtime_error_message(
      [] { ptx::launch(half_block_at_syncthreads, dim3(1), dim3(64), 0, nullptr); });
  EXPECT_NE(message.find("deadlock"), std::string::npos) << "message: '" << message << "'";
  std::vector<int> out(32, 0);
  ptx::launch(upper_warp_exits_before_syncthreads, dim3(1), dim3(64), 0, nullptr, out.data());
  EXPECT_EQ(first_difference(out, std::vector<int>(32, 1)), -1);
}

__global__ void read_last_shared_byte(unsigned char* out) {
  KERNELS_DYNAMIC_SHARED(unsigned char, smem);
  if (threadIdx.x == 0) *out = smem[65535];
}

TEST(SimtErrors, DynamicSharedAbove48KiBNeedsAllowDynamicShared) {
  unsigned char out = 0;
  auto launch_64k = [&] {
    ptx::launch(read_last_shared_byte, dim3(1), dim3(32), 65536, nullptr, &out);
  };
  // 48 KiB is the default: this also undoes an earlier run's 64 KiB (--gtest_repeat).
  ASSERT_EQ(ptx::allow_dynamic_shared(read_last_shared_byte, 48 * 1024), cudaSuccess);
  EXPECT_THROW(launch_64k(), std::runtime_error);
  ASSERT_EQ(ptx::allow_dynamic_shared(read_last_shared_byte, 65536), cudaSuccess);
  EXPECT_NO_THROW(launch_64k());
  EXPECT_EQ(out, 0xff);  // the poison of the 65536th byte
  EXPECT_NE(ptx::allow_dynamic_shared(read_last_shared_byte, 300 * 1024), cudaSuccess);
}

__global__ void thread_37_throws() {
  if (threadIdx.x == 37) throw std::domain_error("thread 37");
  __syncthreads();  // where the other threads wait
}

TEST(SimtErrors, ExceptionOfAThreadPropagatesOutOfLaunch) {
  EXPECT_THROW(ptx::launch(thread_37_throws, dim3(1), dim3(64), 0, nullptr), std::domain_error);
}

__global__ void count_threads(int* count) { atomicAdd(count, 1); }

TEST(SimtErrors, BlockOf0Or1025ThreadsIsRefusedAnd1024Runs) {
  int count = 0;
  for (const unsigned threads : {0u, 1025u})
    EXPECT_THROW(ptx::launch(count_threads, dim3(1), dim3(threads), 0, nullptr, &count),
                 std::runtime_error)
        << threads << " threads";
  EXPECT_EQ(count, 0);
  ptx::launch(count_threads, dim3(1), dim3(32, 16, 2), 0, nullptr, &count);
  EXPECT_EQ(count, 1024);
}

}  // namespace
