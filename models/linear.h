// One linear layer of the model, y = x W^T, in one of three states:
//   dense:   W is a plain tensor (trainable when full fine-tuning, e.g. engine_demo)
//   frozen:  W is a FrozenLinear (f32 or NF4) with no gradient
//   adapted: frozen W plus LoRA factors A, B (ops::lora_linear)
#pragma once
#include <memory>

#include "engine/frozen_linear.h"
#include "engine/rng.h"

namespace models {

enum class BaseFormat { F32, NF4 };

struct Linear {
  engine::Tensor weight;                                // dense state only
  std::shared_ptr<const engine::FrozenLinear> frozen;   // frozen and adapted states
  engine::Tensor lora_a, lora_b;                        // adapted state only
  float scaling = 0.0f;
  float dropout = 0.0f;
  bool lora_enabled = true;  // false: forward computes the frozen base alone (DPO's reference)

  bool adapted() const { return lora_a.defined(); }
  int64_t out_features() const;
  int64_t in_features() const;
  // Dropout (training only) draws from the stream (seed, 0); callers give each
  // linear of each step its own seed. first_row: x holds rows first_row.. of a longer
  // input (sequence tiling, engine/tiling.h), so the mask continues where that input's
  // would be; first_row * in_features() must be a multiple of 4 (one Philox block).
  engine::Tensor forward(const engine::Tensor& x, bool train, uint64_t dropout_seed,
                         int64_t first_row = 0) const;
  void freeze(BaseFormat format);
  void add_lora(int64_t r, float lora_scaling, float lora_dropout, engine::Generator& gen);
};

}  // namespace models
