// RAII switch that turns every LoRA adapter of a model off for a scope: inside it the
// model is its frozen base, the reference policy of DPO (the same weights, no second
// copy). The previous state comes back when the scope ends, also on an exception.
// Run no backward of a pass recorded with the adapters on while the scope is open: a
// checkpointed layer recomputes its forward in backward and would then see them off.
#pragma once
#include "models/llama.h"

namespace models {

class LoraDisabledScope {
 public:
  explicit LoraDisabledScope(LlamaModel& model) : model_(model), was_enabled_(model.lora_enabled()) {
    model_.set_lora_enabled(false);
  }
  ~LoraDisabledScope() { model_.set_lora_enabled(was_enabled_); }
  LoraDisabledScope(const LoraDisabledScope&) = delete;
  LoraDisabledScope& operator=(const LoraDisabledScope&) = delete;

 private:
  LlamaModel& model_;
  bool was_enabled_;
};

}  // namespace models
