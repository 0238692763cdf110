#include "models/adapter.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

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
  std::error_code ec;
  fs::create_directories(dir, ec);
  ENGINE_CHECK(!ec, dir, ": cannot create directory: ", ec.message());
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
  ENGINE_CHECK(in.good(), config_path, ": cannot open");
  json config;
  try {
    config = json::parse(in);
  } catch (const json::exception& e) {
    throw engine::Error(config_path + ": invalid JSON: " + e.what());
  }
  auto field = [&](const char* name) -> const json& {
    ENGINE_CHECK(config.is_object() && config.contains(name), config_path, ": missing field \"", name, "\"");
    return config.at(name);
  };
  PeftAdapter a;
  try {
    ENGINE_CHECK(field("peft_type") == "LORA", config_path, ": peft_type is not \"LORA\"");
    a.lora.r = field("r").get<int64_t>();
    a.lora.alpha = field("lora_alpha").get<float>();
    a.lora.dropout = config.value("lora_dropout", 0.0f);
    a.lora.use_rslora = config.value("use_rslora", false);
    a.lora.targets = field("target_modules").get<std::vector<std::string>>();
    a.base_model_name = config.value("base_model_name_or_path", std::string());
  } catch (const json::exception& e) {
    throw engine::Error(config_path + ": wrong field type: " + e.what());
  }
  a.lora.validate();
  engine::io::SafetensorsFile file((fs::path(dir) / kWeightsFile).string());
  for (const std::string& name : file.names()) a.tensors.push_back({name, file.load(name)});
  return a;
}

void load_adapter_weights(LlamaModel& model, const PeftAdapter& adapter, const std::string& source) {
  std::map<std::string, engine::Tensor> by_name(adapter.tensors.begin(), adapter.tensors.end());
  for (auto& [name, target] : model.lora_parameters()) {
    auto it = by_name.find(name);
    ENGINE_CHECK(it != by_name.end(), source, ": adapter lacks '", name, "'");
    ENGINE_CHECK(it->second.shape() == target.shape(), source, ": '", name, "' has shape ",
                 it->second.shape().str(), ", expected ", target.shape().str());
    engine::Tensor t = target;
    t.copy_from(it->second.dtype() == engine::DType::F32 ? it->second
                                                          : it->second.to_dtype(engine::DType::F32));
    by_name.erase(it);
  }
  ENGINE_CHECK(by_name.empty(), source, ": unexpected tensor '", by_name.begin()->first, "'");
}

}  // namespace models
