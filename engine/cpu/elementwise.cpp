// CPU reference: add, mul, scale, reshape.
#include "engine/cpu/ops.h"

namespace engine::cpu {

namespace {
void check_same(const Tensor& a, const Tensor& b, const char* op) {
  require_f32(a, op, "a");
  require_f32(b, op, "b");
  ENGINE_CHECK(a.shape() == b.shape(), op, ": shapes ", a.shape().str(), " and ", b.shape().str());
}
}  // namespace

std::vector<Tensor> add_forward(OpContext&, const std::vector<Tensor>& in) {
  check_same(in[0], in[1], "add");
  Tensor out = Tensor::empty(in[0].shape());
  const float *a = in[0].data<float>(), *b = in[1].data<float>();
  float* y = out.data<float>();
  for (int64_t i = 0; i < out.numel(); ++i) y[i] = a[i] + b[i];
  return {out};
}

std::vector<Tensor> add_backward(OpContext&, const std::vector<Tensor>& grad_out) {
  return {grad_out[0], grad_out[0]};
}

std::vector<Tensor> mul_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  check_same(in[0], in[1], "mul");
  Tensor out = Tensor::empty(in[0].shape());
  const float *a = in[0].data<float>(), *b = in[1].data<float>();
  float* y = out.data<float>();
  for (int64_t i = 0; i < out.numel(); ++i) y[i] = a[i] * b[i];
  ctx.save({in[0], in[1]});
  return {out};
}

std::vector<Tensor> mul_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  const Tensor &a = ctx.saved[0], &b = ctx.saved[1];
  const float* g = grad_out[0].data<float>();
  Tensor da = Tensor::empty(a.shape()), db = Tensor::empty(b.shape());
  for (int64_t i = 0; i < a.numel(); ++i) {
    da.data<float>()[i] = g[i] * b.data<float>()[i];
    db.data<float>()[i] = g[i] * a.data<float>()[i];
  }
  return {da, db};
}

std::vector<Tensor> scale_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  require_f32(in[0], "scale", "x");
  Tensor out = Tensor::empty(in[0].shape());
  for (int64_t i = 0; i < out.numel(); ++i)
    out.data<float>()[i] = in[0].data<float>()[i] * ctx.attrs.factor;
  return {out};
}

std::vector<Tensor> scale_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  OpContext inner;
  inner.attrs.factor = ctx.attrs.factor;
  return scale_forward(inner, {grad_out[0]});
}

// A view: valid on any device, so the registry uses it for CUDA tensors too.
std::vector<Tensor> reshape_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  return {in[0].view(ctx.attrs.shape)};
}

std::vector<Tensor> reshape_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  return {grad_out[0].view(ctx.input_shapes[0])};
}

}  // namespace engine::cpu
