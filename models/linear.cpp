#include "models/linear.h"

#include <cmath>

#include "engine/ops.h"
#include "engine/quant/nf4_linear.h"

namespace models {

using engine::Tensor;

int64_t Linear::out_features() const { return frozen ? frozen->out_features() : weight.dim(0); }
int64_t Linear::in_features() const { return frozen ? frozen->in_features() : weight.dim(1); }

Tensor Linear::forward(const Tensor& x, bool train, uint64_t dropout_seed, int64_t first_row) const {
  if (!frozen) return engine::ops::matmul(x, weight, false, true);
  if (!adapted() || !lora_enabled)
    return engine::ops::matmul(x, frozen->dequantize(x.dtype(), x.device()), false, true);
  engine::ops::LoraDropout d;
  // Element i of the mask is Philox block offset + i / 4, lane i % 4 (kmath::dropout_keep).
  const int64_t first_element = first_row * in_features();
  ENGINE_CHECK(first_element % 4 == 0, "Linear::forward: row ", first_row, " of width ", in_features(),
               " does not start a Philox block");
  if (train) d = {dropout, dropout_seed, static_cast<uint64_t>(first_element / 4)};
  return engine::ops::lora_linear(x, frozen, lora_a, lora_b, scaling, d);
}

void Linear::freeze(BaseFormat format) {
  ENGINE_CHECK(!frozen, "linear layer is already frozen");
  if (format == BaseFormat::NF4) frozen = engine::quant::Nf4FrozenLinear::quantize(weight);
  else frozen = std::make_shared<engine::DenseFrozenLinear>(weight);
  weight = Tensor();
}

void Linear::add_lora(int64_t r, float lora_scaling, float lora_dropout, engine::Generator& gen) {
  ENGINE_CHECK(frozen, "freeze the base weight before adding LoRA");
  const float bound = 1.0f / std::sqrt(static_cast<float>(in_features()));
  lora_a = engine::uniform({r, in_features()}, -bound, bound, gen).set_requires_grad(true);
  lora_b = Tensor::zeros({out_features(), r}).set_requires_grad(true);
  scaling = lora_scaling;
  dropout = lora_dropout;
}

}  // namespace models
