// Small helpers shared by the CUDA op implementations (engine/cuda/*.cpp): dtype
// checks and gradient layout.
#pragma once
#include "engine/op.h"
#include "kernels/elementwise.h"

namespace engine::cuda_ops {

// The kernel element type of an f32 or bf16 dtype (callers have checked it is one).
inline kernels::ElemType elem_type(DType t) {
  return t == DType::F32 ? kernels::ElemType::F32 : kernels::ElemType::BF16;
}

// The kernel element type of a CUDA f32/bf16 tensor; one-line error otherwise.
inline kernels::ElemType arith_type(const Tensor& t, const char* op, const char* what) {
  ENGINE_CHECK(t.device().is_cuda(), op, ": ", what, " must be on a CUDA device, got ", t.str());
  ENGINE_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16, op, ": ", what,
               " must be f32 or bf16 on cuda, got ", t.str());
  return elem_type(t.dtype());
}

inline Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }

// The upstream gradient in the layout of `like` (zeros when undefined, converted when
// another op produced it in a different dtype).
inline Tensor grad_like(const Tensor& g, const Shape& shape, const Tensor& like) {
  if (!g.defined()) return Tensor::zeros(shape, like.dtype(), like.device());
  ENGINE_CHECK(g.shape() == shape && g.device() == like.device(), "gradient ", g.str(),
               " does not match ", shape.str(), " on ", like.device().str());
  return g.dtype() == like.dtype() ? g : g.to_dtype(like.dtype());
}

// Two operands of an elementwise op: CUDA f32/bf16 tensors of one shape, dtype and device.
inline void check_same(const Tensor& a, const Tensor& b, const char* op) {
  arith_type(a, op, "a");
  arith_type(b, op, "b");
  ENGINE_CHECK(a.shape() == b.shape() && a.dtype() == b.dtype() && a.device() == b.device(), op,
               ": operands ", a.str(), " and ", b.str(), " differ");
}

}  // namespace engine::cuda_ops
