#include "models/adapter.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"

namespace models {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
// Floats written as the short decimals a user typed (0.05, not 0.05000000074505806).
double decimal(float x) { return std::round(double(x) * 1e6) / 1e6; }
const char* kConfigFile = "adapter_config.json";
const char* kWeightsFile = "adapter_model.safetensors";
}  // namespace

void write_peft_adapter(const std::string& dir, const LlamaModel& model, const LoraConfig& lora,
                        const std::string& base_model_name) {
  NamedTensors tensors = model.lora_parameters();
  ENGINE_CHECK(!tensors.empty(), "the model has no LoRA adapters to write");
  // Whatever happened in training, an adapter with a NaN or Inf is never written: it would
  // load without complaint and turn every output of the model into NaN.
  for (const auto& [name, t] : tensors) {
    const std::vector<float> values = t.to_floats();
    for (size_t i = 0; i < values.size(); ++i)
      if (!std::isfinite(values[i]))
        throw engine::Error(dir + ": not writing the adapter: '" + name + "' holds " +
                            std::to_string(values[i]) + " at flat index " + std::to_string(i));
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  ENGINE_INPUT_CHECK(!ec, dir, ": cannot create directory: ", ec.message());
  json config = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model_name},
      {"r", lora.r},
      {"lora_alpha", decimal(lora.alpha)},
      {"lora_dropout", decimal(lora.dropout)},
      {"target_modules", lora.targets},
      {"bias", "none"},
      {"use_rslora", lora.use_rslora},
      {"use_dora", false},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"modules_to_save", nullptr},
      {"layers_to_transform", nullptr},
      {"revision", nullptr},
  };
  engine::io::write_safetensors((fs::path(dir) / kWeightsFile).string(), tensors, {{"format", "pt"}});
  engine::io::write_file_atomic((fs::path(dir) / kConfigFile).string(), config.dump(2) + "\n");
}

PeftAdapter read_peft_adapter(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / kConfigFile).string();
  std::ifstream in(config_path);
  ENGINE_INPUT_CHECK(in.good(), config_path, ": cannot open");
  json config;
  try {
    config = json::parse(in);
  } catch (const json::exception& e) {
    throw engine::InputError(config_path + ": invalid JSON: " + e.what());
  }
  auto field = [&](const char* name) -> const json& {
    ENGINE_INPUT_CHECK(config.is_object() && config.contains(name), config_path,
                       ": missing field \"", name, "\"");
    return config.at(name);
  };
  // PEFT writes null for unset optional fields (base_model_name_or_path of a model built
  // from a config): null counts as absent.
  auto optional = [&](const char* name, auto fallback) {
    const bool set = config.is_object() && config.contains(name) && !config.at(name).is_null();
    return set ? config.at(name).get<decltype(fallback)>() : fallback;
  };
  PeftAdapter a;
  try {
    ENGINE_INPUT_CHECK(field("peft_type") == "LORA", config_path, ": peft_type is not \"LORA\"");
    a.lora.r = field("r").get<int64_t>();
    a.lora.alpha = field("lora_alpha").get<float>();
    a.lora.dropout = optional("lora_dropout", 0.0f);
    a.lora.use_rslora = optional("use_rslora", false);
    a.lora.targets = field("target_modules").get<std::vector<std::string>>();
    a.base_model_name = optional("base_model_name_or_path", std::string());
  } catch (const json::exception& e) {
    throw engine::InputError(config_path + ": wrong field type: " + e.what());
  }
  try {
    a.lora.validate();
  } catch (const engine::InputError& e) {  // it does not know the file: name it
    throw engine::InputError(config_path + ": " + e.what());
  }
  engine::io::SafetensorsFile file((fs::path(dir) / kWeightsFile).string());
  for (const std::string& name : file.names()) a.tensors.push_back({name, file.load(name)});
  return a;
}

void load_adapter_weights(LlamaModel& model, const PeftAdapter& adapter, const std::string& source) {
  std::map<std::string, engine::Tensor> by_name(adapter.tensors.begin(), adapter.tensors.end());
  for (auto& [name, target] : model.lora_parameters()) {
    auto it = by_name.find(name);
    ENGINE_INPUT_CHECK(it != by_name.end(), source, ": adapter lacks '", name, "'");
    ENGINE_INPUT_CHECK(it->second.shape() == target.shape(), source, ": '", name, "' has shape ",
                       it->second.shape().str(), ", expected ", target.shape().str());
    engine::Tensor t = target;
    t.copy_from(it->second.dtype() == engine::DType::F32 ? it->second
                                                          : it->second.to_dtype(engine::DType::F32));
    by_name.erase(it);
  }
  ENGINE_INPUT_CHECK(by_name.empty(), source, ": unexpected tensor '", by_name.begin()->first, "'");
}

}  // namespace models
