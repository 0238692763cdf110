// train70b's --model forms that go through the streaming loader: a Hugging Face model id
// found in the local cache (HF_HUB_CACHE), a synthetic model, and a checkpoint missing a
// tensor (one line naming the file and tensor, nothing written).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/error.h"
#include "engine/io/safetensors.h"
#include "models/llama.h"
#include "tools/train/trainer.h"

namespace fs = std::filesystem;

namespace {

class Train70bLoading : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("train70b_loading_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    fs::remove_all(dir_);
    ::unsetenv("HF_HUB_CACHE");
  }

  // A tiny BF16 Llama in `model`, without the tensor `drop` when given.
  void make_hf_model(const fs::path& model, const std::string& drop = "") const {
    fs::create_directories(model);
    std::ofstream(model / "config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "intermediate_size": 48, "vocab_size": 40, "rms_norm_eps": 1e-5, "rope_theta": 10000.0})";
    models::LlamaConfig c = models::preset("tiny");
    c.hidden = 32, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.head_dim = 8, c.intermediate = 48, c.vocab = 40;
    models::NamedTensors weights;
    for (auto& [name, t] : models::LlamaModel(c, 5).named_parameters())
      if (name != drop) weights.push_back({name, t.to_dtype(engine::DType::BF16)});
    engine::io::write_safetensors((model / "model.safetensors").string(), weights, {{"format", "pt"}});
  }

  std::string make_token_dataset(int vocab) const {
    std::ofstream out(dir_ / "data.jsonl");
    for (int i = 0; i < 40; ++i) {
      nlohmann::json ids = nlohmann::json::array();
      for (int t = 0; t < 10; ++t) ids.push_back((i % 7 + (1 + i % 3) * t) % vocab);
      out << nlohmann::json{{"input_ids", ids}}.dump() << "\n";
    }
    return (dir_ / "data.jsonl").string();
  }

  train::TrainOptions options(const std::string& model, int vocab) const {
    train::TrainOptions o;
    o.model = model;
    o.dataset = make_token_dataset(vocab);
    o.output = (dir_ / "out").string();
    o.max_steps = 2;
    o.batch_size = 4;
    return o;
  }

  fs::path dir_;
};

}  // namespace

TEST_F(Train70bLoading, HuggingFaceModelIdFromTheLocalCache) {
  const fs::path cache = dir_ / "hub";
  make_hf_model(cache / "models--test-org--tiny-llama" / "snapshots" / "0123abcd");
  ::setenv("HF_HUB_CACHE", cache.c_str(), 1);
  std::ostringstream log;
  train::run_training(options("test-org/tiny-llama", 40), log);
  EXPECT_NE(log.str().find("model test-org/tiny-llama (" + (cache / "models--test-org--tiny-llama").string()),
            std::string::npos) << log.str();
  EXPECT_NE(log.str().find("loading: 21/21 tensors"), std::string::npos) << log.str();
  EXPECT_TRUE(fs::exists(dir_ / "out" / "adapter_model.safetensors"));
}

TEST_F(Train70bLoading, ModelIdNotInTheCacheSaysHowToDownloadItAndWritesNothing) {
  ::setenv("HF_HUB_CACHE", (dir_ / "empty-hub").c_str(), 1);
  std::ostringstream log;
  try {
    train::run_training(options("test-org/absent", 40), log);
    FAIL() << "expected an error";
  } catch (const engine::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("huggingface-cli download test-org/absent"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

TEST_F(Train70bLoading, SyntheticPresetTrainsWithoutACheckpoint) {
  std::ostringstream log;
  const train::RunSummary s = train::run_training(options("synthetic:tiny", 258), log);
  EXPECT_EQ(s.steps, 2);
  EXPECT_NE(log.str().find("model synthetic:tiny"), std::string::npos) << log.str();
  EXPECT_TRUE(fs::exists(dir_ / "out" / "adapter_model.safetensors"));
}

TEST_F(Train70bLoading, MissingTensorIsOneLineNamingFileAndTensorAndNothingIsWritten) {
  const fs::path model = dir_ / "model";
  make_hf_model(model, "model.layers.1.mlp.down_proj.weight");
  std::ostringstream log;
  try {
    train::run_training(options(model.string(), 40), log);
    FAIL() << "expected an error";
  } catch (const engine::InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find((model / "model.safetensors").string()), std::string::npos) << m;
    EXPECT_NE(m.find("model.layers.1.mlp.down_proj.weight"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}
