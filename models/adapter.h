// PEFT adapter directories, loadable by Hugging Face PEFT (PeftModel.from_pretrained):
//   adapter_config.json        peft_type LORA, task_type CAUSAL_LM, r, lora_alpha, ...
//   adapter_model.safetensors  base_model.model.model.layers.N.<module>.lora_{A,B}.weight,
//                              f32, metadata {"format": "pt"}
// Each file is written to a temporary name and renamed, so a crash never leaves a
// half-written adapter under the final name.
#pragma once
#include <string>

#include "models/llama.h"
#include "models/lora.h"

namespace models {

// Refuses (engine::Error, nothing written) a factor holding a NaN or Inf.
void write_peft_adapter(const std::string& dir, const LlamaModel& model, const LoraConfig& lora,
                        const std::string& base_model_name);

struct PeftAdapter {
  LoraConfig lora;
  std::string base_model_name;
  NamedTensors tensors;  // PEFT names, file order
};

// Reads and validates an adapter directory (errors name the file and the field).
PeftAdapter read_peft_adapter(const std::string& dir);

// Copies an adapter's factors into a model that has LoRA on the same targets.
void load_adapter_weights(LlamaModel& model, const PeftAdapter& adapter, const std::string& source);

}  // namespace models
