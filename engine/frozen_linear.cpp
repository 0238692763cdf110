#include "engine/frozen_linear.h"

namespace engine {

DenseFrozenLinear::DenseFrozenLinear(Tensor weight) : weight_(weight.detach()) {
  ENGINE_CHECK(weight_.rank() == 2, "a linear weight must be [out, in], got ", weight_.str());
}

Tensor DenseFrozenLinear::dequantize(DType dtype, Device device) const {
  Tensor w = weight_.device() == device ? weight_ : weight_.to(device);
  return w.dtype() == dtype ? w : w.to_dtype(dtype);
}

std::shared_ptr<FrozenLinear> DenseFrozenLinear::to(Device device) const {
  return std::make_shared<DenseFrozenLinear>(weight_.to(device));
}

}  // namespace engine
