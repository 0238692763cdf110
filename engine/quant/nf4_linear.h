// A frozen linear weight stored as NF4 with double-quantized statistics
// (bitsandbytes-compatible, engine/quant/nf4.h): about 4.127 bits per parameter.
// dequantize() rebuilds W on demand for one call; nothing dense is kept.
#pragma once
#include "engine/frozen_linear.h"
#include "engine/quant/nf4.h"

namespace engine::quant {

class Nf4FrozenLinear final : public FrozenLinear {
 public:
  explicit Nf4FrozenLinear(Nf4Weight weight);
  // Quantizes a dense [out, in] weight (f32 or bf16, CPU).
  static std::shared_ptr<Nf4FrozenLinear> quantize(const Tensor& dense, bool double_quant = true);
  int64_t out_features() const override { return weight_.shape[0]; }
  int64_t in_features() const override { return weight_.shape[1]; }
  Tensor dequantize(DType dtype, Device device) const override;
  size_t nbytes() const override { return weight_.nbytes(); }
  const char* format() const override { return "nf4"; }
  Device device() const override { return weight_.packed.device(); }
  std::shared_ptr<FrozenLinear> to(Device device) const override;
  const Nf4Weight& weight() const { return weight_; }

 private:
  Nf4Weight weight_;
};

}  // namespace engine::quant
