#include "engine/quant/nf4_linear.h"

namespace engine::quant {

Nf4FrozenLinear::Nf4FrozenLinear(Nf4Weight weight) : weight_(std::move(weight)) {
  ENGINE_CHECK(weight_.shape.rank() == 2, "an nf4 linear weight must be [out, in], got ",
               weight_.shape.str());
}

std::shared_ptr<Nf4FrozenLinear> Nf4FrozenLinear::quantize(const Tensor& dense, bool double_quant) {
  Tensor f32 = dense.device().is_cpu() ? dense : dense.to(Device::cpu());
  if (f32.dtype() != DType::F32) f32 = f32.to_dtype(DType::F32);
  return std::make_shared<Nf4FrozenLinear>(quantize_nf4(f32, double_quant));
}

Tensor Nf4FrozenLinear::dequantize(DType dtype, Device device) const {
  Tensor w = dequantize_nf4(weight_);  // f32 on the CPU
  if (dtype != DType::F32) w = w.to_dtype(dtype);
  return device.is_cpu() ? w : w.to(device);
}

std::shared_ptr<FrozenLinear> Nf4FrozenLinear::to(Device device) const {
  Nf4Weight w = weight_;
  auto move = [&](Tensor& t) {
    if (t.defined()) t = t.to(device);
  };
  move(w.packed);
  move(w.absmax_q);
  move(w.nested_absmax);
  move(w.absmax);
  return std::make_shared<Nf4FrozenLinear>(std::move(w));
}

}  // namespace engine::quant
