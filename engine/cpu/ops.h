// The CPU reference of every op: fp32 loops written to be obviously right, not fast.
// Each op has <name>_forward and <name>_backward with the registry's signatures
// (engine/op.h); the registry in engine/op_registry.cpp points at them.
#pragma once
#include "engine/op.h"

namespace engine::cpu {

#define ENGINE_CPU_OP(name)                                                          \
  std::vector<Tensor> name##_forward(OpContext& ctx, const std::vector<Tensor>& in); \
  std::vector<Tensor> name##_backward(OpContext& ctx, const std::vector<Tensor>& grad_out);

ENGINE_CPU_OP(matmul)
ENGINE_CPU_OP(add)
ENGINE_CPU_OP(mul)
ENGINE_CPU_OP(scale)
ENGINE_CPU_OP(sum)
ENGINE_CPU_OP(mean)
ENGINE_CPU_OP(reshape)
ENGINE_CPU_OP(rms_norm)
ENGINE_CPU_OP(rope)
ENGINE_CPU_OP(silu)
ENGINE_CPU_OP(swiglu)
ENGINE_CPU_OP(softmax)
ENGINE_CPU_OP(attention)
ENGINE_CPU_OP(embedding)
ENGINE_CPU_OP(cross_entropy)
ENGINE_CPU_OP(dropout)
ENGINE_CPU_OP(lora_linear)
ENGINE_CPU_OP(lm_head_cross_entropy)  // engine/cpu/lm_head_loss.cpp

#undef ENGINE_CPU_OP

// Helpers shared by the CPU ops.
void require_f32(const Tensor& t, const char* op, const char* what);
// The gradient to use for an output: `g` itself, or zeros of `shape` when undefined.
Tensor grad_or_zeros(const Tensor& g, const Shape& shape);

}  // namespace engine::cpu
