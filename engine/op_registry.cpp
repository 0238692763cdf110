// The one table of ops, generated from the op list (engine/op_list.h). A row: id,
// name, #inputs, #outputs, the CPU reference, and the CUDA column
// (engine/cuda/ops.h: cuda_ops::impl).
#include <array>

#include "engine/cpu/ops.h"
#include "engine/cuda/ops.h"
#include "engine/op.h"

namespace engine {

std::span<const OpDef> all_ops() {
  // Indexed by OpId: rows come in the list's order, as the enumerators do. Built on
  // first use, so that code running during static initialisation sees it complete.
  static const std::array<OpDef, static_cast<size_t>(OpId::kCount)> ops = {{
#define ENGINE_OP_ROW(Id, name, inputs, outputs, cuda)                                     \
  {OpId::Id, #name, inputs, outputs, OpImpl{cpu::name##_forward, cpu::name##_backward}, \
   cuda_ops::impl(OpId::Id)},
      ENGINE_OPS(ENGINE_OP_ROW)
#undef ENGINE_OP_ROW
  }};
  return ops;
}

}  // namespace engine
