// CPU reference: sum and mean over all elements (accumulated in double so the
// reference is more accurate than any fp32 implementation it checks).
#include "engine/cpu/ops.h"

namespace engine::cpu {

namespace {
double total(const Tensor& x) {
  double s = 0;
  for (int64_t i = 0; i < x.numel(); ++i) s += x.data<float>()[i];
  return s;
}
Tensor scalar(float v) { return Tensor::full(Shape{}, v); }
}  // namespace

std::vector<Tensor> sum_forward(OpContext&, const std::vector<Tensor>& in) {
  require_f32(in[0], "sum", "x");
  return {scalar(static_cast<float>(total(in[0])))};
}

std::vector<Tensor> sum_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  return {Tensor::full(ctx.input_shapes[0], grad_out[0].item())};
}

std::vector<Tensor> mean_forward(OpContext&, const std::vector<Tensor>& in) {
  require_f32(in[0], "mean", "x");
  ENGINE_CHECK(in[0].numel() > 0, "mean of an empty tensor");
  return {scalar(static_cast<float>(total(in[0]) / in[0].numel()))};
}

std::vector<Tensor> mean_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  float n = static_cast<float>(ctx.input_shapes[0].numel());
  return {Tensor::full(ctx.input_shapes[0], grad_out[0].item() / n)};
}

}  // namespace engine::cpu
