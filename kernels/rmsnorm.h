// Launchers for the RMSNorm kernels (kernels/rmsnorm.cu). Host-includable: raw device
// pointers, the row count and width, the stream to queue on. Every launcher checks its
// preconditions and the launch (kernels::Error); rows == 0 queues nothing.
//
// x, y, dy, dx: [rows, d] row-major, `type` f32 or bf16; w, dw: [d] of the same type;
// rstd: [rows] f32. Math: kernels/math/rmsnorm.h, fp32 throughout.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/elementwise.h"  // ElemType

namespace kernels {

// y = w * (x * rstd), rstd[r] = 1 / sqrt(mean(x[r]^2) + eps) (saved for backward).
void rmsnorm_forward(void* y, float* rstd, const void* x, const void* w, ElemType type,
                     int64_t rows, int64_t d, float eps, cudaStream_t stream);

// fp32 elements of workspace rmsnorm_backward needs when it computes dw.
int64_t rmsnorm_backward_workspace_floats(int64_t rows, int64_t d);

// dx = rstd * (w dy - xhat * mean(dy w xhat)) per row, and (when dw is not null)
// dw = sum over rows of dy * xhat, reduced deterministically through `workspace`
// (at least rmsnorm_backward_workspace_floats(rows, d) floats; unused when dw is
// null). dx may be null when only dw is wanted; at least one of them must be given.
void rmsnorm_backward(void* dx, void* dw, float* workspace, const void* dy, const void* x,
                      const void* w, const float* rstd, ElemType type, int64_t rows, int64_t d,
                      cudaStream_t stream);

}  // namespace kernels
