#include "engine/ops.h"

namespace engine::ops {

namespace {
Tensor call1(OpId id, const std::vector<Tensor>& inputs, const OpAttrs& attrs = {}) {
  return call_op(id, inputs, attrs)[0];
}
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  OpAttrs attrs;
  attrs.transpose_a = transpose_a;
  attrs.transpose_b = transpose_b;
  return call1(OpId::Matmul, {a, b}, attrs);
}
Tensor add(const Tensor& a, const Tensor& b) { return call1(OpId::Add, {a, b}); }
Tensor mul(const Tensor& a, const Tensor& b) { return call1(OpId::Mul, {a, b}); }
Tensor scale(const Tensor& x, float factor) {
  OpAttrs attrs;
  attrs.factor = factor;
  return call1(OpId::Scale, {x}, attrs);
}
Tensor sum(const Tensor& x) { return call1(OpId::Sum, {x}); }
Tensor mean(const Tensor& x) { return call1(OpId::Mean, {x}); }
Tensor reshape(const Tensor& x, const Shape& shape) {
  OpAttrs attrs;
  attrs.shape = shape;
  return call1(OpId::Reshape, {x}, attrs);
}
Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps) {
  OpAttrs attrs;
  attrs.eps = eps;
  return call1(OpId::RmsNorm, {x, weight}, attrs);
}
Tensor rope(const Tensor& x, const RopeConfig& config, int64_t position_offset,
            const Tensor& positions) {
  OpAttrs attrs;
  attrs.rope = config;
  attrs.position_offset = position_offset;
  if (positions.defined()) return call1(OpId::Rope, {x, positions}, attrs);
  return call1(OpId::Rope, {x}, attrs);
}
Tensor silu(const Tensor& x) { return call1(OpId::Silu, {x}); }
Tensor swiglu(const Tensor& gate, const Tensor& up) { return call1(OpId::SwiGLU, {gate, up}); }
Tensor softmax(const Tensor& x) { return call1(OpId::Softmax, {x}); }
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                 const Tensor& doc_start) {
  OpAttrs attrs;
  attrs.softmax_scale = scale;
  if (doc_start.defined()) return call1(OpId::Attention, {q, k, v, doc_start}, attrs);
  return call1(OpId::Attention, {q, k, v}, attrs);
}
Tensor embedding(const Tensor& ids, const Tensor& table) {
  return call1(OpId::Embedding, {ids, table});
}
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int ignore_index) {
  OpAttrs attrs;
  attrs.ignore_index = ignore_index;
  return call1(OpId::CrossEntropy, {logits, targets}, attrs);
}
Tensor lm_head_cross_entropy(const Tensor& h, const Tensor& weight, const Tensor& targets,
                             int ignore_index, int64_t chunk_rows) {
  OpAttrs attrs;
  attrs.ignore_index = ignore_index;
  attrs.chunk_rows = chunk_rows;
  return call1(OpId::LmHeadCrossEntropy, {h, weight, targets}, attrs);
}
Tensor lm_head_logprobs(const Tensor& h, const Tensor& weight, const Tensor& targets,
                        int64_t segment_rows, bool mean, int ignore_index, int64_t chunk_rows) {
  OpAttrs attrs;
  attrs.segment_rows = segment_rows;
  attrs.segment_mean = mean;
  attrs.ignore_index = ignore_index;
  attrs.chunk_rows = chunk_rows;
  return call1(OpId::LmHeadLogprobs, {h, weight, targets}, attrs);
}
Tensor dropout(const Tensor& x, float p, uint64_t seed, uint64_t offset) {
  OpAttrs attrs;
  attrs.p = p;
  attrs.seed = seed;
  attrs.offset = offset;
  return call1(OpId::Dropout, {x}, attrs);
}

Tensor lora_linear(const Tensor& x, std::shared_ptr<const FrozenLinear> frozen, const Tensor& lora_a,
                   const Tensor& lora_b, float scaling, LoraDropout dropout) {
  OpAttrs attrs;
  attrs.frozen = std::move(frozen);
  attrs.lora_scaling = scaling;
  attrs.p = dropout.p;
  attrs.seed = dropout.seed;
  attrs.offset = dropout.offset;
  return call1(OpId::LoraLinear, {x, lora_a, lora_b}, attrs);
}

}  // namespace engine::ops
