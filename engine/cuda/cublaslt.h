// Dense matrix products on the GPU through cuBLASLt: one handle and one 32 MiB
// workspace per device (the workspace comes from the device's caching allocator, so
// it counts against the memory budget).
//
// gemm computes, for every batch index i < batch, in row-major storage:
//   C_i = alpha * op(A_i) @ op(B_i) + beta * C_i
//   op(A_i) is [m, k]: A_i stored [m, k], or [k, m] when transpose_a.
//   op(B_i) is [k, n]: B_i stored [k, n], or [n, k] when transpose_b.
//   C_i is [m, n], stored densely (row stride n).
//   X_i = X + i * stride_x elements; stride 0 shares one matrix across the batch.
// Types (a_type == b_type): f32 -> f32, bf16 -> bf16, bf16 -> f32. Accumulation is
// fp32 (CUBLAS_COMPUTE_32F; never TF32). With beta == 0, C is not read (it may hold
// NaN). k == 0 gives C = beta * C.
//
// cuBLASLt is column-major; a row-major X [r, c] is the column-major X^T [c, r] with
// the same leading dimension, so the product is issued as C^T = op(B)^T op(A)^T:
// cuBLAS's "A" is our B and its "B" is our A, with the same transpose flags.
//
// The workspace is shared by everything queued on the device, which assumes the
// engine's single-stream use (engine/cuda/runtime.h); two threads issuing GEMMs on
// two streams at once would need one workspace per stream.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/dtype.h"

namespace engine::cuda {

void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha,
          const void* a, DType a_type, int64_t stride_a, const void* b, DType b_type,
          int64_t stride_b, float beta, void* c, DType c_type, int64_t stride_c, int64_t batch,
          cudaStream_t stream);

inline constexpr size_t kCublasWorkspaceBytes = 32ull << 20;

}  // namespace engine::cuda
