// The CUDA implementations named by the registry's CUDA_IMPL rows (engine/op_registry.cpp).
// Same signatures and semantics as the CPU reference (engine/cpu/ops.h), for f32 and
// bf16 tensors on a CUDA device: every input of an op has the same dtype, outputs and
// gradients come out in that dtype, and the math is fp32 (cuBLASLt with fp32
// accumulation for matmul). Work is queued on the current stream (engine/cuda/runtime.h).
#pragma once
#include "engine/op.h"

namespace engine::cuda_ops {

#define ENGINE_CUDA_OP(name)                                                         \
  std::vector<Tensor> name##_forward(OpContext& ctx, const std::vector<Tensor>& in); \
  std::vector<Tensor> name##_backward(OpContext& ctx, const std::vector<Tensor>& grad_out);

ENGINE_CUDA_OP(matmul)
ENGINE_CUDA_OP(add)
ENGINE_CUDA_OP(mul)
ENGINE_CUDA_OP(scale)
ENGINE_CUDA_OP(silu)
ENGINE_CUDA_OP(swiglu)
ENGINE_CUDA_OP(attention)  // engine/cuda/attention_op.cpp
ENGINE_CUDA_OP(rms_norm)   // engine/cuda/norm_rope_ops.cpp
ENGINE_CUDA_OP(rope)       // engine/cuda/norm_rope_ops.cpp
ENGINE_CUDA_OP(embedding)  // engine/cuda/embedding_ops.cpp (ids i32, table f32/bf16)
ENGINE_CUDA_OP(dropout)      // engine/cuda/dropout.cpp
ENGINE_CUDA_OP(lora_linear)  // engine/cuda/lora_linear.cpp (x, dy bf16/f32; A, B f32/bf16)

ENGINE_CUDA_OP(lm_head_cross_entropy)  // engine/cuda/lm_head_loss_op.cpp

#undef ENGINE_CUDA_OP

}  // namespace engine::cuda_ops
