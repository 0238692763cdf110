#include "engine/quant/nf4_linear.h"

#include "engine/backend.h"

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

std::shared_ptr<Nf4FrozenLinear> Nf4FrozenLinear::quantize_on_device(const Tensor& dense,
                                                                     bool double_quant) {
  return std::make_shared<Nf4FrozenLinear>(backend::device_nf4_quantize(dense, double_quant));
}

Tensor Nf4FrozenLinear::dequantize(DType dtype, Device device) const {
  if (this->device().is_cuda()) {
    Tensor w = backend::device_nf4_dequantize(weight_,
                                              dtype == DType::BF16 ? DType::BF16 : DType::F32);
    if (w.dtype() != dtype) w = w.to_dtype(dtype);
    return w.device() == device ? w : w.to(device);
  }
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

Tensor Nf4FrozenLinear::matmul_direct(const Tensor& x) const {
  return backend::device_nf4_matmul(weight_, x);
}

}  // namespace engine::quant
