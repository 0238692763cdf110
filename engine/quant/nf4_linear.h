// A frozen linear weight stored as NF4 with double-quantized statistics
// (bitsandbytes-compatible, engine/quant/nf4.h): about 4.127 bits per parameter.
// dequantize() rebuilds W on demand for one call; nothing dense is kept.
//
// On a CUDA device (CUDA builds) the NF4 kernels do the work (kernels/nf4.h):
//   quantize_on_device  dense f32/bf16/f16 [out, in] on the GPU -> NF4 on the same GPU,
//                       bit-identical to quantize() of the same values;
//   dequantize          on the weight's device, to bf16 or f32 (bitwise equal to the CPU's
//                       dequantize rounded to that type); other dtypes/devices convert after;
//   matmul_direct(x)    x bf16 [..., in] on the weight's device with at most 64 rows:
//                       y bf16 [..., out] = x W^T read straight from NF4
//                       (nf4_matmul_small_m); any other input returns an undefined tensor.
#pragma once
#include "engine/frozen_linear.h"
#include "engine/quant/nf4.h"

namespace engine::quant {

class Nf4FrozenLinear final : public FrozenLinear {
 public:
  explicit Nf4FrozenLinear(Nf4Weight weight);
  // Quantizes a dense [out, in] weight (f32 or bf16, CPU).
  static std::shared_ptr<Nf4FrozenLinear> quantize(const Tensor& dense, bool double_quant = true);
  // Quantizes a dense [out, in] weight (f32, bf16 or f16) that lives on a CUDA device, there;
  // the result stays on that device. Throws in builds without CUDA.
  static std::shared_ptr<Nf4FrozenLinear> quantize_on_device(const Tensor& dense,
                                                             bool double_quant = true);
  int64_t out_features() const override { return weight_.shape[0]; }
  int64_t in_features() const override { return weight_.shape[1]; }
  Tensor dequantize(DType dtype, Device device) const override;
  size_t nbytes() const override { return weight_.nbytes(); }
  const char* format() const override { return "nf4"; }
  Device device() const override { return weight_.packed.device(); }
  std::shared_ptr<FrozenLinear> to(Device device) const override;
  Tensor matmul_direct(const Tensor& x) const override;
  const Nf4Weight& weight() const { return weight_; }

 private:
  Nf4Weight weight_;
};

}  // namespace engine::quant
