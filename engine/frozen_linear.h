// The frozen base weight W [out, in] of a LoRA linear layer. It never gets a
// gradient, so it is not a tensor input of the op but an attribute: dense (f32,
// bf16) or quantized (NF4 with double-quantized statistics, engine/quant). The op
// only needs W dequantized on demand, one layer at a time.
#pragma once
#include <memory>

#include "engine/tensor.h"

namespace engine {

class FrozenLinear {
 public:
  virtual ~FrozenLinear() = default;
  virtual int64_t out_features() const = 0;
  virtual int64_t in_features() const = 0;
  // W as a dense [out, in] tensor of `dtype` on `device` (a fresh buffer).
  virtual Tensor dequantize(DType dtype, Device device) const = 0;
  // Bytes this weight occupies where it lives.
  virtual size_t nbytes() const = 0;
  virtual const char* format() const = 0;  // "f32", "bf16", "nf4"
  virtual Device device() const = 0;
  // The same weight moved to `device` (a copy; *this is unchanged).
  virtual std::shared_ptr<FrozenLinear> to(Device device) const = 0;
  // y = x W^T computed straight from the stored format, without materialising W,
  // when the format has a kernel for this input (NF4 on CUDA for at most 64 rows).
  // Returns an undefined tensor when it has none; callers then dequantize and GEMM.
  virtual Tensor matmul_direct(const Tensor& /*x*/) const { return Tensor(); }
};

// An unquantized frozen weight (f32 or bf16).
class DenseFrozenLinear final : public FrozenLinear {
 public:
  explicit DenseFrozenLinear(Tensor weight);
  int64_t out_features() const override { return weight_.dim(0); }
  int64_t in_features() const override { return weight_.dim(1); }
  Tensor dequantize(DType dtype, Device device) const override;
  size_t nbytes() const override { return weight_.nbytes(); }
  const char* format() const override { return dtype_name(weight_.dtype()); }
  Device device() const override { return weight_.device(); }
  std::shared_ptr<FrozenLinear> to(Device device) const override;
  const Tensor& weight() const { return weight_; }

 private:
  Tensor weight_;
};

}  // namespace engine
