// The optimizer interface train70b drives: resident AdamW (engine/optim/adamw.h) and the
// paged 32-bit and 8-bit AdamW variants (--optim, bitsandbytes' names) implement it.
// state()/load_state() carry everything a resumed run needs, so a checkpoint written by
// one process and loaded by another continues bit for bit.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace engine::optim {

// Named host tensors (f32, u8, i64, ...), in a fixed order; written to and read from
// safetensors by the checkpoint code.
using OptimizerState = std::vector<std::pair<std::string, Tensor>>;

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update from the parameters' current .grad (parameters without one are skipped).
  virtual void step() = 0;
  virtual void zero_grad() = 0;
  virtual void set_lr(float lr) = 0;
  virtual int64_t steps() const = 0;
  virtual const std::vector<Tensor>& params() const = 0;
  // The optimizer's kind as --optim spells it (adamw, paged_adamw_32bit, paged_adamw_8bit).
  virtual std::string kind() const = 0;
  // Every state tensor (moments, quantization statistics) as host copies, plus the step count.
  virtual OptimizerState state() const = 0;
  // Restores state() of an optimizer of the same kind over parameters of the same shapes;
  // throws engine::InputError naming the first entry that does not match.
  virtual void load_state(const OptimizerState& state) = 0;
};

}  // namespace engine::optim
