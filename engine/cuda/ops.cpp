// The CUDA column of the op registry, generated from the op list (engine/op_list.h).
#include "engine/cuda/ops.h"

#include "engine/cpu/ops.h"

namespace engine::cuda_ops {

OpImpl impl(OpId id) {
// The cuda column of a row: its own implementation, none, or the shape-only CPU one.
#define ENGINE_CUDA_IMPL_CUDA(name) return OpImpl{name##_forward, name##_backward};
#define ENGINE_CUDA_IMPL_NO_CUDA(name) return OpImpl{};
#define ENGINE_CUDA_IMPL_ANY_DEVICE(name) return OpImpl{cpu::name##_forward, cpu::name##_backward};
#define ENGINE_CUDA_IMPL(Id, name, inputs, outputs, cuda) \
  case OpId::Id:                                          \
    ENGINE_CUDA_IMPL_##cuda(name)
  switch (id) {
    ENGINE_OPS(ENGINE_CUDA_IMPL)
    case OpId::kCount: break;
  }
#undef ENGINE_CUDA_IMPL
#undef ENGINE_CUDA_IMPL_ANY_DEVICE
#undef ENGINE_CUDA_IMPL_NO_CUDA
#undef ENGINE_CUDA_IMPL_CUDA
  return OpImpl{};
}

}  // namespace engine::cuda_ops
