// What a train70b run is made of before training starts: the model the --model flag
// names, its weights, its tokenizer, the dataset options; checks of sizes against the
// config before anything is allocated. Shared by SFT training and the other subcommands.
#pragma once
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "models/adapter.h"
#include "models/dataset.h"
#include "models/llama.h"
#include "models/lora.h"
#include "models/llama_config.h"
#include "models/tokenizer.h"
#include "tools/train/memory_mechanisms.h"
#include "tools/train/options.h"

namespace train {

struct Loaded {
  std::unique_ptr<models::LlamaModel> model;
  std::string base_name;
};

// What --model names: a preset, "synthetic:<preset>", a Hugging Face directory, or a model
// id (org/name) found in the local Hugging Face cache; config.json is read. Nothing is
// allocated yet, so the run's sizes can be checked against the config first.
struct ModelSource {
  models::LlamaConfig config;
  std::string dir;  // empty for a preset or a synthetic model
  std::string name;
  bool synthetic = false;
};

ModelSource resolve_model(const TrainOptions& o);
Loaded load_model(const TrainOptions& o, const ModelSource& src, engine::Device device,
                  std::ostream& log);
std::unique_ptr<models::Tokenizer> make_tokenizer(const ModelSource& src);
models::DatasetOptions dataset_options(const TrainOptions& o, const ModelSource& src);
void check_lora_rank(const TrainOptions& o, const models::LlamaConfig& c);
// Whether the run trains on the GPU: --device cuda (refused, with the reason, when no GPU
// can be used), auto (when one can), cpu.
bool train_on_gpu(const TrainOptions& o);

// The model a run trains: the base loaded (device memory owned by "weights") and frozen,
// LoRA added (the shape of --lora-* flags, or `adapter`'s shape and weights), moved to the
// GPU in bf16 with the memory mechanisms applied; its trainable parameters owned by "lora".
struct TrainableModel {
  Loaded loaded;
  models::LoraConfig lora;
  MemoryMechanisms mechanisms;
  std::vector<engine::Tensor> params;
};
TrainableModel setup_trainable_model(const TrainOptions& o, const ModelSource& source, bool on_gpu,
                                     const std::optional<models::PeftAdapter>& adapter, std::ostream& log);

void warn_long_sequences(const std::vector<models::Example>& examples,
                         const models::LlamaConfig& c, std::ostream& log);

}  // namespace train
