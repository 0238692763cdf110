// The CUDA implementations of the op list's rows marked CUDA (engine/op_list.h), in
// engine/cuda/<file>.cpp named after the CPU reference's file (engine/cpu/). Same
// signatures and semantics as the CPU reference, for f32 and bf16 tensors on a CUDA
// device: every input of an op has the same dtype, outputs and gradients come out in
// that dtype, and the math is fp32 (cuBLASLt with fp32 accumulation for matmul). Work
// is queued on the current stream (engine/cuda/runtime.h).
#pragma once
#include "engine/op.h"

namespace engine::cuda_ops {

#define ENGINE_CUDA_OP_CUDA(name) ENGINE_DECLARE_OP(name)
#define ENGINE_CUDA_OP_NO_CUDA(name)
#define ENGINE_CUDA_OP_ANY_DEVICE(name)
#define ENGINE_CUDA_OP(Id, name, inputs, outputs, cuda) ENGINE_CUDA_OP_##cuda(name)
ENGINE_OPS(ENGINE_CUDA_OP)
#undef ENGINE_CUDA_OP
#undef ENGINE_CUDA_OP_ANY_DEVICE
#undef ENGINE_CUDA_OP_NO_CUDA
#undef ENGINE_CUDA_OP_CUDA

// The CUDA column of the op registry: the implementation of op `id` for CUDA tensors,
// empty where the row has none (engine/cuda/ops.cpp; in a build without CUDA,
// engine/backend.cpp gives every op an empty one).
OpImpl impl(OpId id);

}  // namespace engine::cuda_ops
