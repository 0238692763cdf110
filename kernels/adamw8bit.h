// Launcher for the 8-bit blockwise AdamW step (kernels/adamw8bit.cu). Host-includable.
//
// One launch updates every tensor of the list in place: the fp32 param from grad (fp32),
// with both moments as u8 codes of the bitsandbytes dynamic maps and one fp32 absmax per
// 256-value block (kernels/math/adamw8bit.h), bitwise equal to the CPU reference.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/math/adamw.h"

namespace kernels {

// numel elements of param and grad; ceil(numel / 256) absmax values per moment.
struct AdamW8bitTensor {
  float* param = nullptr;
  const float* grad = nullptr;
  uint8_t* qm = nullptr;
  uint8_t* qv = nullptr;
  float* absmax_m = nullptr;
  float* absmax_v = nullptr;
  int64_t numel = 0;
};

// Bytes of device workspace a launch over `num_tensors` tensors needs (both maps and the
// descriptor table, which the launcher copies there).
size_t adamw8bit_workspace_bytes(int num_tensors);

// Queues one step over tensors[0 .. num_tensors). `tensors` is host memory; `workspace` is
// device memory of at least adamw8bit_workspace_bytes(num_tensors) bytes that stays
// allocated until the kernel has run (stream order).
void adamw8bit_step(const AdamW8bitTensor* tensors, int num_tensors, const kmath::AdamWStep& step,
                    void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace kernels
