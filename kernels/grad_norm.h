// Launcher for the fused multi-tensor sum of squares behind gradient-norm clipping
// (kernels/grad_norm.cu). Host-includable.
//
//   result = sum over tensors t, elements i of double(g_t[i])^2
//
// One launch reads every tensor; only one double comes back to the host, where
// engine::optim::clip_grad_norm takes the square root and decides the scale.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/elementwise.h"

namespace kernels {

struct SquaresTensor {
  const void* data = nullptr;
  ElemType type = ElemType::F32;  // f32 or bf16
  int64_t numel = 0;
};

// Bytes of device workspace for a launch over these tensors (descriptor table and one
// double partial per chunk of 8192 elements).
size_t sum_squares_workspace_bytes(const SquaresTensor* tensors, int num_tensors);

// Queues the sum into *result (device memory). The partition into chunks and the order
// of every addition depend only on the tensor sizes, not on the device: the result is
// deterministic and the same on every GPU.
void sum_squares(const SquaresTensor* tensors, int num_tensors, double* result, void* workspace,
                 size_t workspace_bytes, cudaStream_t stream);

}  // namespace kernels
