// CUDA implementation of the attention op; semantics of the CPU reference
// (engine/cpu/attention.cpp), kernels in kernels/attention_*.cu (kernels/attention.h).
//
// q [B, T, Hq, D], k and v [B, T, Hkv, D], one dtype (f32 or bf16) on one CUDA device;
// out in that dtype. scale = attrs.softmax_scale, or 1/sqrt(D) when it is 0. Saved for
// backward, as on the CPU: q, k, v, out and the fp32 log-sum-exp [B, Hq, T]. bf16 with
// D = 64 or 128 runs the tensor-core kernels; other cases the fp32 fallback kernels.
// The backward computes dq, dk, dv in one call (deterministic; its fp32 scratch comes
// from the caching allocator) and drops the ones no input needs.
// The optional fourth input doc_start (i32 [B, T] on the same device; packed sequences)
// runs the document-masked kernels. Its layout (contiguous documents) is checked by the
// CPU reference and by whoever builds it (models::PackedBatch); checking it here would
// cost a device-to-host copy per call, so the kernels assume it.
#include <cmath>

#include "engine/cuda/op_helpers.h"
#include "engine/cuda/ops.h"
#include "engine/cuda/runtime.h"
#include "engine/nvtx.h"
#include "engine/op_shapes.h"
#include "kernels/attention.h"

namespace engine::cuda_ops {

namespace {

// Shapes as the CPU reference checks them, plus one dtype and device for all three.
kmath::AttentionDims checked_dims(const Tensor& q, const Tensor& k, const Tensor& v) {
  arith_type(q, "attention", "q");
  arith_type(k, "attention", "k");
  arith_type(v, "attention", "v");
  ENGINE_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype() && q.device() == k.device() &&
                   q.device() == v.device(),
               "attention: q ", q.str(), ", k ", k.str(), " and v ", v.str(),
               " differ in dtype or device");
  return attention_dims(q.shape(), k.shape(), v.shape());
}

// The doc_start input's device pointer, or nullptr without one.
const int32_t* doc_start_ptr(const Tensor& ds, const Tensor& q, const kmath::AttentionDims& s) {
  if (!ds.defined()) return nullptr;
  ENGINE_CHECK(ds.dtype() == DType::I32 && ds.shape() == Shape({s.batch, s.seq}) &&
                   ds.device() == q.device(),
               "attention: doc_start must be i32 [", s.batch, ", ", s.seq, "] on ",
               q.device().str(), ", got ", ds.str());
  return ds.data<int32_t>();
}

float softmax_scale(const OpAttrs& attrs, int64_t d) {
  if (attrs.softmax_scale != 0.0f) return attrs.softmax_scale;
  return static_cast<float>(1.0 / std::sqrt(double(d)));
}

}  // namespace

std::vector<Tensor> attention_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  NvtxRange range("attention_forward");
  const Tensor &q = in[0], &k = in[1], &v = in[2];
  const kmath::AttentionDims s = checked_dims(q, k, v);
  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = Tensor::empty(Shape{s.batch, s.q_heads, s.seq}, DType::F32, q.device());
  const Tensor doc_start = in.size() > 3 ? in[3] : Tensor();
  kernels::attention_forward(out.raw_data(), lse.data<float>(), q.raw_data(), k.raw_data(),
                             v.raw_data(), arith_type(q, "attention", "q"), s,
                             softmax_scale(ctx.attrs, s.head_dim), cuda::current_stream(),
                             doc_start_ptr(doc_start, q, s));
  ctx.save({q, k, v, out, lse});
  if (doc_start.defined()) ctx.save({doc_start});
  return {out};
}

std::vector<Tensor> attention_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  NvtxRange range("attention_backward");
  const Tensor &q = ctx.saved[0], &k = ctx.saved[1], &v = ctx.saved[2];
  const Tensor &out = ctx.saved[3], &lse = ctx.saved[4];
  const kmath::AttentionDims s = checked_dims(q, k, v);
  const kernels::ElemType type = arith_type(q, "attention", "q");
  Tensor go = grad_out[0];
  if (!go.defined()) {
    go = Tensor::zeros(q.shape(), q.dtype(), q.device());
  } else {
    ENGINE_CHECK(go.shape() == q.shape() && go.device() == q.device(),
                 "attention: output gradient ", go.str(), " does not match output ", out.str());
    if (go.dtype() != q.dtype()) go = go.to_dtype(q.dtype());
  }
  const size_t ws_bytes = kernels::attention_backward_workspace_bytes(type, s);
  Tensor workspace =
      Tensor::empty(Shape{static_cast<int64_t>((ws_bytes + 3) / 4)}, DType::F32, q.device());
  Tensor dq = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor dk = Tensor::empty(k.shape(), k.dtype(), k.device());
  Tensor dv = Tensor::empty(v.shape(), v.dtype(), v.device());
  kernels::attention_backward(dq.raw_data(), dk.raw_data(), dv.raw_data(), q.raw_data(),
                              k.raw_data(), v.raw_data(), out.raw_data(), lse.data<float>(),
                              go.raw_data(), type, s, softmax_scale(ctx.attrs, s.head_dim),
                              workspace.raw_data(), workspace.nbytes(), cuda::current_stream(),
                              /*kv_splits=*/0,
                              doc_start_ptr(ctx.saved.size() > 5 ? ctx.saved[5] : Tensor(), q, s));
  if (!ctx.wants_grad(0)) dq = Tensor();
  if (!ctx.wants_grad(1)) dk = Tensor();
  if (!ctx.wants_grad(2)) dv = Tensor();
  return {dq, dk, dv};
}

}  // namespace engine::cuda_ops
