#include "engine/cpu/ops.h"

namespace engine::cpu {

void require_f32(const Tensor& t, const char* op, const char* what) {
  ENGINE_CHECK(t.dtype() == DType::F32, op, ": ", what, " must be f32 on the cpu, got ", t.str());
}

Tensor grad_or_zeros(const Tensor& g, const Shape& shape) {
  return g.defined() ? g : Tensor::zeros(shape);
}

}  // namespace engine::cpu
