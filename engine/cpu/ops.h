// The CPU reference of every op: fp32 loops written to be obviously right, not fast.
// Each row of the op list (engine/op_list.h) has <name>_forward and <name>_backward
// with the registry's signatures (engine/op.h), in engine/cpu/<file>.cpp.
#pragma once
#include "engine/op.h"

namespace engine::cpu {

// Every row of the op list has a CPU reference.
#define ENGINE_CPU_OP(Id, name, inputs, outputs, cuda) ENGINE_DECLARE_OP(name)
ENGINE_OPS(ENGINE_CPU_OP)
#undef ENGINE_CPU_OP

// Helpers shared by the CPU ops.
void require_f32(const Tensor& t, const char* op, const char* what);
// The gradient to use for an output: `g` itself, or zeros of `shape` when undefined.
Tensor grad_or_zeros(const Tensor& g, const Shape& shape);

}  // namespace engine::cpu
