// PEFT adapter directories: write then read back bit-exactly, the config fields
// PEFT needs, and loading the factors into a fresh model reproduces its outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "models/adapter.h"

namespace fs = std::filesystem;

namespace {

models::LlamaConfig config() {
  models::LlamaConfig c = models::preset("tiny");
  c.hidden = 32, c.heads = 4, c.kv_heads = 2, c.head_dim = 8, c.intermediate = 48, c.vocab = 40;
  return c;
}

models::LlamaModel adapted(uint64_t lora_seed, const models::LoraConfig& lora) {
  models::LlamaModel m(config(), 1);
  m.freeze_base(models::BaseFormat::NF4);
  m.add_lora(lora, lora_seed);
  for (auto& [name, t] : m.lora_parameters()) engine::fill_uniform(t, -0.1f, 0.1f, lora_seed, 0);
  return m;
}

fs::path temp_dir(const char* name) {
  fs::path p = fs::temp_directory_path() / (std::string("adapter_test_") + name + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

}  // namespace

TEST(PeftAdapter, WriteReadRoundTripAndLoad) {
  models::LoraConfig lora;
  lora.r = 4;
  lora.alpha = 8;
  lora.dropout = 0.05f;
  lora.targets = {"q_proj", "v_proj", "down_proj"};
  models::LlamaModel m = adapted(7, lora);
  fs::path dir = temp_dir("roundtrip");
  models::write_peft_adapter(dir.string(), m, lora, "meta-llama/Meta-Llama-3-8B");

  models::PeftAdapter a = models::read_peft_adapter(dir.string());
  EXPECT_EQ(a.lora.r, 4);
  EXPECT_EQ(a.lora.alpha, 8.0f);
  EXPECT_EQ(a.lora.targets, lora.targets);
  EXPECT_EQ(a.base_model_name, "meta-llama/Meta-Llama-3-8B");
  models::NamedTensors expected = m.lora_parameters();
  ASSERT_EQ(a.tensors.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(a.tensors[i].first, expected[i].first);
    EXPECT_EQ(a.tensors[i].second.to_floats(), expected[i].second.to_floats());
  }
  engine::io::SafetensorsFile file((dir / "adapter_model.safetensors").string());
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.info("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight").shape,
            (std::vector<int64_t>{4, 48}));

  // A fresh model with other LoRA values, loaded from the directory, computes the same.
  models::LlamaModel fresh = adapted(99, lora);
  models::load_adapter_weights(fresh, a, dir.string());
  std::vector<int32_t> ids{1, 5, 9, 2, 33};
  engine::Tensor t = engine::Tensor::from_ints(ids, {1, 5});
  engine::NoGradGuard no_grad;
  EXPECT_EQ(fresh.logits(t).to_floats(), m.logits(t).to_floats());

  std::ifstream in(dir / "adapter_config.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const char* needle : {"\"peft_type\": \"LORA\"", "\"task_type\": \"CAUSAL_LM\"", "\"bias\": \"none\"",
                             "\"lora_dropout\": 0.05,", "\"fan_in_fan_out\": false", "\"use_rslora\": false"})
    EXPECT_NE(text.find(needle), std::string::npos) << needle;
  for (const auto& entry : fs::directory_iterator(dir))
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << entry.path();
  fs::remove_all(dir);
}

// An adapter holding a NaN or Inf is refused before anything is written.
TEST(PeftAdapter, NonFiniteFactorsAreNeverWritten) {
  models::LoraConfig lora;
  lora.r = 4;
  lora.targets = {"q_proj", "v_proj"};
  for (float bad : {std::nanf(""), INFINITY}) {
    models::LlamaModel m = adapted(7, lora);
    engine::Tensor b = m.lora_parameters().back().second;
    b.data<float>()[5] = bad;
    fs::path dir = temp_dir("nonfinite");
    try {
      models::write_peft_adapter(dir.string(), m, lora, "base");
      ADD_FAILURE() << "wrote an adapter holding " << bad;
    } catch (const engine::Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(m.lora_parameters().back().first), std::string::npos) << msg;
      EXPECT_NE(msg.find("flat index 5"), std::string::npos) << msg;
    }
    EXPECT_FALSE(fs::exists(dir));
  }
}

TEST(PeftAdapter, ReadErrorsNameTheFile) {
  fs::path dir = temp_dir("errors");
  fs::create_directories(dir);
  std::ofstream(dir / "adapter_config.json") << "{\"peft_type\": \"LORA\", \"r\": 4}";
  try {
    models::read_peft_adapter(dir.string());
    FAIL() << "no error";
  } catch (const engine::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("adapter_config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("lora_alpha"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos);
  }
  fs::remove_all(dir);
}
