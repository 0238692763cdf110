// The SIMT emulator: runs the CUDA kernels of kernels/ on the CPU, from their unchanged
// sources, so that every GPU test also runs on a machine without a GPU.
//
// Build (ENGINE_CUDA=SIMT): the .cu files are compiled by the host compiler with this
// header force-included and KERNELS_SIMT defined; the CUDA runtime and cuBLASLt are
// replaced by the CPU test doubles fake_cudart.cpp and fake_cublaslt.cpp.
//
// Execution model: a launch runs its blocks one after another; every thread of a block
// is a fiber (fiber.h) with its own stack, so thread-private state (registers, locals)
// is private, and shared memory (KERNELS_SHARED and KERNELS_DYNAMIC_SHARED of
// kernels/ptx.cuh) is one object per block. A fiber runs until it reaches a barrier:
// __syncthreads, or a warp-wide instruction (shuffles, __syncwarp, ldmatrix, mma.sync),
// where it waits for the others.
// Deterministic: the same launch always interleaves the same way.
//
// What it checks: index math, bounds of the tiles, the use of every fragment layout
// (ldmatrix, mma.sync, as the PTX manual defines them), barrier placement (a barrier that
// a live thread of its block, or lane of its mask, never reaches is reported as a
// deadlock; threads that have exited count as arrived, as in PTX), cp.async
// groups (copies land only at cp.async.wait_group, so reading a tile too early reads
// the 0xFF poison that fills all shared memory, static and dynamic, at every block
// start), and the launch limits of the emulated GPU (arch.h: SIMT_GPU).
// What it cannot check: real concurrency (races between blocks, the memory model),
// timing, and hardware arithmetic differences (contracted FMAs, fast-math intrinsics).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#define KERNELS_SIMT 1

namespace simt {

struct ThreadState {
  uint3 thread_idx{}, block_idx{};
  dim3 block_dim, grid_dim;
  int linear = 0;  // thread index within the block
};

// The thread (fiber) now running; valid inside a launch only.
extern ThreadState* current;

inline int lane() { return current->linear & 31; }

// Runs body() as every thread of every block of `kernel`'s grid; returns when all have
// finished. Throws std::runtime_error on a bad configuration (as a launch error would
// be: more threads per block than the emulated GPU has, more than 48 KiB of dynamic
// shared memory without allow_dynamic_shared) or a deadlock, and rethrows what a
// thread threw.
void launch(const void* kernel, dim3 grid, dim3 block, size_t dynamic_smem_bytes,
            const std::function<void()>& body);
// cudaFuncAttributeMaxDynamicSharedMemorySize: false above the emulated GPU's opt-in limit.
bool allow_dynamic_shared(const void* kernel, int bytes);

unsigned char* dynamic_shared();
// The current block's object of `bytes` bytes for the static shared variable `key`
// (KERNELS_SHARED): allocated and poisoned at the first call of the block.
void* static_shared(const void* key, size_t bytes);

void sync_block();
void sync_warp(unsigned mask);

// Each calling lane of `mask` deposits `bytes` bytes; once all have, returns the 32 lane
// slots (lane l's deposit at l * kSlotBytes), valid until this lane's next exchange.
constexpr size_t kSlotBytes = 64;
const unsigned char* warp_exchange(unsigned mask, const void* mine, size_t bytes);

template <class T>
T shuffle_from(unsigned mask, T value, int src_lane) {
  static_assert(sizeof(T) <= kSlotBytes, "value too large for a lane slot");
  if (src_lane < 0 || src_lane > 31) src_lane = lane();
  const unsigned char* slots = warp_exchange(mask, &value, sizeof(T));
  T out;
  std::memcpy(&out, slots + static_cast<size_t>(src_lane) * kSlotBytes, sizeof(T));
  return out;
}

void cp_async(void* smem, const void* gmem, int bytes, bool valid);
void cp_async_commit();
void cp_async_wait(int pending);
void ldmatrix_x4(uint32_t (&r)[4], const void* row_address, bool transpose);
void mma_m16n8k16_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
uint32_t pack_bf16x2(float lo, float hi);

}  // namespace simt

// ---- the CUDA device vocabulary, on the host ----------------------------------------

// A plain `__shared__` variable would be a function static here, which keeps the previous
// block's values (and GCC cannot place the statics of templates where the emulator could
// poison them): kernels declare static shared memory with KERNELS_SHARED instead.
#undef __shared__
#define __shared__ \
  _Pragma("GCC error \"SIMT: declare shared memory with KERNELS_SHARED (kernels/ptx.cuh)\"")
#undef __launch_bounds__
#define __launch_bounds__(...)
#define threadIdx (::simt::current->thread_idx)
#define blockIdx (::simt::current->block_idx)
#define blockDim (::simt::current->block_dim)
#define gridDim (::simt::current->grid_dim)

inline void __syncthreads() { simt::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { simt::sync_warp(mask); }

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return simt::shuffle_from(mask, v, (simt::lane() & ~(width - 1)) + (src & (width - 1)));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = simt::lane(), src = lane ^ lane_mask;
  return simt::shuffle_from(mask, v, src / width > lane / width ? lane : src);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = simt::lane();
  const bool inside = (lane & (width - 1)) + int(delta) < width;
  return simt::shuffle_from(mask, v, inside ? lane + int(delta) : lane);
}

// One OS thread runs all fibers and none is preempted mid-instruction: every
// read-modify-write is atomic.
template <class T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <class T>
T atomicMin(T* p, T v) {
  const T old = *p;
  if (v < old) *p = v;
  return old;
}
template <class T>
T atomicMax(T* p, T v) {
  const T old = *p;
  if (old < v) *p = v;
  return old;
}

// CUDA's device min/max overloads for arithmetic types.
template <class A, class B>
auto min(A a, B b) -> std::common_type_t<A, B> {
  return b < a ? b : a;
}
template <class A, class B>
auto max(A a, B b) -> std::common_type_t<A, B> {
  return a < b ? b : a;
}

template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T __ldcs(const T* p) {
  return *p;
}

// Correctly rounded IEEE operations: the host's, with contraction off (-ffp-contract=off).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __double2float_rn(double d) { return static_cast<float>(d); }
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
