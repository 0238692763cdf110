// Launcher for the fused multi-tensor AdamW step (kernels/adamw.cu). Host-includable.
//
// One launch updates every tensor of the list: param, m and v in place from grad, all
// fp32 and on the current device, element for element the kmath::adamw_update of
// kernels/math/adamw.h (bitwise equal to the CPU optimizer).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/math/adamw.h"

namespace kernels {

// One parameter tensor: numel contiguous fp32 elements each of param, grad, m and v.
// grad may alias nothing else; param, m, v are updated in place.
struct AdamWTensor {
  float* param = nullptr;
  const float* grad = nullptr;
  float* m = nullptr;
  float* v = nullptr;
  int64_t numel = 0;
};

// Bytes of device workspace a launch over `num_tensors` tensors needs (the descriptor
// table the launcher copies there).
size_t adamw_workspace_bytes(int num_tensors);

// Queues one fused step over tensors[0 .. num_tensors). `tensors` is host memory;
// `workspace` is device memory of at least adamw_workspace_bytes(num_tensors) bytes
// that must stay allocated until the kernel has run (stream order).
void adamw_step(const AdamWTensor* tensors, int num_tensors, const kmath::AdamWStep& step,
                void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace kernels
