// The Hugging Face reference of tests/data/hf_reference/ (made by
// tests/data/make_hf_reference.py): a tiny random Llama with a PEFT LoRA adapter, the
// batch, and what transformers + peft computed for it in f32 (and in bf16, the baseline
// of the CUDA test). Loads it, builds the engine's model from the same files through the
// engine's own loaders (config.json, model.safetensors, the adapter directory), and runs
// the engine on the batch.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/llama.h"

namespace testing_support {

struct HfReference {
  std::string dir;
  models::LlamaConfig config;
  engine::Tensor ids, labels;            // i32 [batch, seq], right-padded
  std::vector<int32_t> mask;             // 1 at real tokens, 0 at pads
  std::vector<float> logits, bf16_logits;  // [batch, seq, vocab], pad positions included
  float loss = 0, bf16_loss = 0;
  // d loss / d LoRA factor by PEFT name (base_model.model.model.layers.N....lora_A.weight).
  std::map<std::string, std::vector<float>> grads, bf16_grads;
  std::string versions;                  // torch/transformers/peft that wrote it
};

// dir: the source tree's tests/data/hf_reference.
HfReference load_hf_reference(const std::string& dir);

// The engine's model from the reference's files: f32 CPU weights, frozen base kept f32
// (the HF weights are f32), the adapter's factors loaded. `scaling_factor` multiplies
// the LoRA alpha (1 for the real model; tests that need a wrong model pass 1.01).
std::unique_ptr<models::LlamaModel> load_engine_model(const HfReference& ref,
                                                      float scaling_factor = 1.0f);

struct EngineRun {
  std::vector<float> logits;  // [batch, seq, vocab], pad positions included
  float loss = 0;
  std::map<std::string, std::vector<float>> grads;  // by PEFT name
};

// Logits (no grad), the loss and its LoRA gradients, on the model's device.
EngineRun run_engine(const models::LlamaModel& model, const HfReference& ref);

// `logits` [batch, seq, vocab] restricted to the non-pad positions (right padding with
// causal attention leaves those unaffected by the pads; HF's logits at pads differ).
std::vector<float> real_positions(const std::vector<float>& logits, const HfReference& ref);

}  // namespace testing_support
