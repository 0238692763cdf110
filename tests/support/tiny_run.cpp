#include "tests/support/tiny_run.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/io/safetensors.h"
#include "models/llama.h"

namespace testing_support {

namespace fs = std::filesystem;

std::string write_tiny_hf_model(const std::string& dir, int intermediate) {
  fs::create_directories(dir);
  std::ofstream(fs::path(dir) / "config.json")
      << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "intermediate_size": )" << intermediate
      << R"(, "vocab_size": 40, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
      "tie_word_embeddings": false, "torch_dtype": "bfloat16"})";
  models::LlamaConfig c = models::preset("tiny");
  c.hidden = 32, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.head_dim = 8, c.intermediate = intermediate,
  c.vocab = 40;
  models::NamedTensors weights = models::LlamaModel(c, 5).named_parameters();
  for (auto& [name, t] : weights) t = t.to_dtype(engine::DType::BF16);
  engine::io::write_safetensors((fs::path(dir) / "model.safetensors").string(), weights, {{"format", "pt"}});
  return dir;
}

std::string write_counting_dataset(const std::string& path, int count, int length) {
  std::ofstream out(path);
  for (int i = 0; i < count; ++i) {
    nlohmann::json ids = nlohmann::json::array();
    // Start i % 40, stride 1 + i / 40 % 3: 120 distinct sequences, so a held-out split
    // never repeats a training example.
    for (int t = 0; t < length; ++t) ids.push_back((i % 40 + (1 + i / 40 % 3) * t) % 40);
    out << nlohmann::json{{"input_ids", ids}}.dump() << "\n";
  }
  return path;
}

}  // namespace testing_support
