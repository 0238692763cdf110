// Error checks for CUDA runtime and cuBLASLt calls, for the kernel launchers and the
// engine's CUDA backend alike (header-only):
//
//   CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, stream));
//   CUBLAS_CHECK(cublasLtMatmul(...));
//   CUDA_CHECK_LAUNCH("silu_forward");   // after a <<<...>>> launch
//
// A failure throws kernels::Error (which engine::Error is) with one line:
//   "engine/cuda/runtime.cpp:42: cudaMalloc(&p, bytes) failed: cudaErrorMemoryAllocation (2): out of memory"
// CUBLAS_CHECK only references cuBLASLt symbols where it is used, so a translation unit
// that includes this header but never uses it does not need to link cublasLt.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <string>

#include "kernels/error.h"

namespace kernels::detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const std::string& expr,
                                          const char* file, int line) {
  throw Error(concat(file, ":", line, ": ", expr, " failed: ", cudaGetErrorName(err), " (",
                     static_cast<int>(err), "): ", cudaGetErrorString(err)));
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t status, const char* expr,
                                            const char* file, int line) {
  throw Error(concat(file, ":", line, ": ", expr, " failed: ", cublasLtGetStatusName(status), " (",
                     static_cast<int>(status), "): ", cublasLtGetStatusString(status)));
}

}  // namespace kernels::detail

#define CUDA_CHECK(expr)                                                                 \
  do {                                                                                   \
    cudaError_t cuda_check_err_ = (expr);                                                \
    if (cuda_check_err_ != cudaSuccess)                                                  \
      ::kernels::detail::throw_cuda_error(cuda_check_err_, #expr, __FILE__, __LINE__);   \
  } while (0)

#define CUBLAS_CHECK(expr)                                                               \
  do {                                                                                   \
    cublasStatus_t cublas_check_status_ = (expr);                                        \
    if (cublas_check_status_ != CUBLAS_STATUS_SUCCESS)                                   \
      ::kernels::detail::throw_cublas_error(cublas_check_status_, #expr, __FILE__,       \
                                            __LINE__);                                   \
  } while (0)

// After a kernel launch: reports a bad configuration (grid, shared memory) or a
// sticky error from earlier work, naming the kernel. Does not synchronise.
#define CUDA_CHECK_LAUNCH(kernel_name)                                                   \
  do {                                                                                   \
    cudaError_t cuda_check_err_ = cudaGetLastError();                                    \
    if (cuda_check_err_ != cudaSuccess)                                                  \
      ::kernels::detail::throw_cuda_error(                                               \
          cuda_check_err_, std::string("launch of ") + (kernel_name), __FILE__, __LINE__); \
  } while (0)
