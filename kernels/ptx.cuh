// The only hardware-specific device code of the kernels: inline-PTX wrappers (cp.async,
// ldmatrix, mma.sync, cvt), the shared-memory declarations and the launch helper.
//
// Two implementations of one contract:
//   nvcc (real GPUs, sm_80 and sm_90): the PTX instructions themselves.
//   KERNELS_SIMT (tests/simt): the kernels compiled by the host compiler and run by the
//   SIMT emulator, which executes every CUDA thread as a fiber and implements each
//   warp-wide instruction below from its PTX definition (fragment layouts included).
// Keeping them here, and nowhere else, is what lets the emulator run the kernel sources
// unchanged.
//
// mma.sync.m16n8k16 (bf16 in, fp32 accumulate). With lane = 4 g + t a warp holds
//   A 16x16 (row-major):  a0 = A[g][2t..2t+1]    a1 = A[g+8][2t..2t+1]
//                         a2 = A[g][2t+8..+9]    a3 = A[g+8][2t+8..+9]
//   B 16x8  (k x n):      b0 = B[2t..2t+1][g]    b1 = B[2t+8..+9][g]
//   C 16x8  (fp32):       c0, c1 = C[g][2t..2t+1]     c2, c3 = C[g+8][2t..2t+1]
// with the lower index of each pair in the lower 16 bits of its register.
// ldmatrix.x4: lanes 8i..8i+7 give the addresses of rows 0..7 of 8x8 b16 matrix i; lane l
// receives in r[i] row l/4, columns 2(l%4) and 2(l%4)+1 of matrix i (of its transpose
// with .trans).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

namespace kernels::ptx {

// Shared memory, in both implementations:
//   KERNELS_SHARED(float[33], red);      a static variable: __shared__ float red[33]
//   KERNELS_DYNAMIC_SHARED(float, acc);  the launch's dynamic shared memory, as float*
// Both are at least 16-byte aligned (cp.async and ldmatrix need it). The type, extents
// included, is an argument of its own so that the emulator can give every block a fresh,
// poisoned object of it, as uninitialized as shared memory is on a GPU.
template <class T>
using SharedStorage = T;

#if defined(KERNELS_SIMT)

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid = true) {
  simt::cp_async(smem, gmem, 16, valid);
}
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid = true) {
  simt::cp_async(smem, gmem, 4, valid);
}
__device__ __forceinline__ void cp_async_commit() { simt::cp_async_commit(); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  simt::cp_async_wait(kPending);
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  simt::ldmatrix_x4(r, smem, false);
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  simt::ldmatrix_x4(r, smem, true);
}
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  simt::mma_m16n8k16_bf16(c, a, b0, b1);
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return simt::pack_bf16x2(lo, hi);
}

#define KERNELS_DYNAMIC_SHARED(type, name) type* const name = reinterpret_cast<type*>(::simt::dynamic_shared())
// The address of the function-static key identifies the declaration (and the template
// instance); the emulator returns the current block's object for it.
#define KERNELS_SHARED(type, name)                                   \
  static char name##_simt_key;                                       \
  using name##_simt_type = ::kernels::ptx::SharedStorage<type>;      \
  name##_simt_type& name = *static_cast<name##_simt_type*>(          \
      ::simt::static_shared(&name##_simt_key, sizeof(name##_simt_type)))

// kernel<<<grid, block, smem, stream>>>(args...), run by the emulator.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t,
            Args&&... args) {
  simt::launch(reinterpret_cast<const void*>(kernel), grid, block, smem, [&] { kernel(args...); });
}

// Lets `kernel` use `bytes` of dynamic shared memory (above the default 48 KiB).
template <class... Params>
cudaError_t allow_dynamic_shared(void (*kernel)(Params...), int bytes) {
  return simt::allow_dynamic_shared(reinterpret_cast<const void*>(kernel), bytes) ? cudaSuccess : cudaErrorInvalidValue;
}

#else

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 (4) bytes global -> shared, asynchronously; valid = false writes zeros, reads nothing.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid = true) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)),
               "l"(gmem), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid = true) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(smem)),
               "l"(gmem), "r"(valid ? 4 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most kPending committed groups of this thread are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem)));
}

// c += A B (16x8x16, bf16 in, fp32 accumulate).
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded (nearest even) to bf16 and packed, lo in the low half: the layout of
// a fragment register (lower column index in the lower half).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));  // a -> high half
  return r;
}

#define KERNELS_SHARED(type, name) __shared__ __align__(16) ::kernels::ptx::SharedStorage<type> name
#define KERNELS_DYNAMIC_SHARED(type, name) \
  extern __shared__ __align__(128) unsigned char name##_bytes[]; \
  type* const name = reinterpret_cast<type*>(name##_bytes)

// kernel<<<grid, block, smem, stream>>>(args...).
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            Args&&... args) {
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
}

// Lets `kernel` use `bytes` of dynamic shared memory (above the default 48 KiB).
template <class... Params>
cudaError_t allow_dynamic_shared(void (*kernel)(Params...), int bytes) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

#endif

}  // namespace kernels::ptx
