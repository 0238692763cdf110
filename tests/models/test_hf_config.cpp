// Tests for models/hf_config: Hugging Face config.json files of each supported Llama
// generation (written into a temporary directory) map onto LlamaConfig, and every bad
// file fails with one engine::Error line that names the file and the problem. Also
// checks parameter_count against the published sizes.
#include "models/hf_config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

#include "engine/error.h"

namespace {

namespace fs = std::filesystem;
using models::LlamaConfig;
using models::load_hf_config;

// Llama-3-8B's config.json as published (abridged only of keys the loader ignores).
const char* kLlama3_8B = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 8192,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

const char* kLlama31_8B = R"({
  "architectures": ["LlamaForCausalLM"],
  "hidden_size": 4096, "intermediate_size": 14336, "max_position_embeddings": 131072,
  "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192, "rope_type": "llama3"
  },
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "vocab_size": 128256
})";

// The same model in the newer transformers spelling.
const char* kLlama31_8B_RopeParameters = R"({
  "architectures": ["LlamaForCausalLM"],
  "dtype": "bfloat16",
  "hidden_size": 4096, "intermediate_size": 14336, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_parameters": {
    "factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192, "rope_theta": 500000.0, "rope_type": "llama3"
  },
  "tie_word_embeddings": false, "vocab_size": 128256
})";

const char* kLlama32_1B = R"({
  "architectures": ["LlamaForCausalLM"],
  "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 8192,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "vocab_size": 128256
})";

// An early Llama-2 conversion without num_key_value_heads or rope_theta.
const char* kLlama2_7B = R"({
  "architectures": ["LlamaForCausalLM"],
  "hidden_size": 4096, "intermediate_size": 11008, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "rms_norm_eps": 1e-05,
  "torch_dtype": "float16", "vocab_size": 32000
})";

class HfConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("hf_config_test_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(counter++) + "_" + test->name());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string write(const std::string& text, const std::string& name = "config.json") {
    std::string p = (dir_ / name).string();
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << text;
    EXPECT_TRUE(f.good()) << p;
    return p;
  }

  // kLlama3_8B with `from` replaced by `to` (which must occur once).
  std::string edited(const std::string& from, const std::string& to) {
    std::string text = kLlama3_8B;
    size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    EXPECT_EQ(text.find(from, at + 1), std::string::npos) << from;
    return write(text.replace(at, from.size(), to));
  }

  // Loading must fail with an input error (engine::InputError), one line that starts with
  // the path and contains `needle`.
  static void expect_error(const std::string& path, const std::string& needle) {
    try {
      load_hf_config(path);
      ADD_FAILURE() << "no error for " << path << " (expected: " << needle << ")";
    } catch (const engine::InputError& e) {
      std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }

  fs::path dir_;
};

TEST_F(HfConfigTest, Llama3_8B) {
  LlamaConfig c = load_hf_config(write(kLlama3_8B));
  EXPECT_EQ(c.hidden, 4096);
  EXPECT_EQ(c.layers, 32);
  EXPECT_EQ(c.heads, 32);
  EXPECT_EQ(c.kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.intermediate, 14336);
  EXPECT_EQ(c.vocab, 128256);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope.theta, 500000.0f);
  EXPECT_EQ(c.rope.scaling_factor, 0.0f);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.max_position, 8192);
  EXPECT_EQ(models::parameter_count(c), 8030261248);
}

TEST_F(HfConfigTest, Llama31RopeScaling) {
  LlamaConfig c = load_hf_config(write(kLlama31_8B));
  EXPECT_FLOAT_EQ(c.rope.theta, 500000.0f);
  EXPECT_FLOAT_EQ(c.rope.scaling_factor, 8.0f);
  EXPECT_FLOAT_EQ(c.rope.low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c.rope.high_freq_factor, 4.0f);
  EXPECT_FLOAT_EQ(c.rope.original_max_position, 8192.0f);
  EXPECT_EQ(models::parameter_count(c), 8030261248);
}

TEST_F(HfConfigTest, RopeParametersSpellingMatchesRopeScaling) {
  LlamaConfig a = load_hf_config(write(kLlama31_8B, "old.json"));
  LlamaConfig b = load_hf_config(write(kLlama31_8B_RopeParameters, "new.json"));
  EXPECT_EQ(a.hidden, b.hidden);
  EXPECT_EQ(a.kv_heads, b.kv_heads);
  EXPECT_EQ(a.rope.theta, b.rope.theta);
  EXPECT_EQ(a.rope.scaling_factor, b.rope.scaling_factor);
  EXPECT_EQ(a.rope.low_freq_factor, b.rope.low_freq_factor);
  EXPECT_EQ(a.rope.high_freq_factor, b.rope.high_freq_factor);
  EXPECT_EQ(a.rope.original_max_position, b.rope.original_max_position);
  EXPECT_EQ(b.torch_dtype, "bfloat16");  // from "dtype"
}

TEST_F(HfConfigTest, RopeParametersDefaultTypeHoldsTheta) {
  LlamaConfig c = load_hf_config(
      edited(R"("rope_scaling": null,)",
             R"("rope_parameters": {"rope_type": "default", "rope_theta": 250000.0},)"));
  EXPECT_FLOAT_EQ(c.rope.theta, 250000.0f);
  EXPECT_EQ(c.rope.scaling_factor, 0.0f);
}

TEST_F(HfConfigTest, OldSpellingTypeIsAccepted) {
  LlamaConfig c = load_hf_config(edited(
      R"("rope_scaling": null,)",
      R"("rope_scaling": {"type": "llama3", "factor": 8, "low_freq_factor": 1,
          "high_freq_factor": 4, "original_max_position_embeddings": 8192},)"));
  EXPECT_FLOAT_EQ(c.rope.scaling_factor, 8.0f);
}

TEST_F(HfConfigTest, Llama32_1BHeadDimAndTiedEmbeddings) {
  LlamaConfig c = load_hf_config(write(kLlama32_1B));
  EXPECT_EQ(c.hidden, 2048);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.kv_heads, 8);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_FLOAT_EQ(c.rope.scaling_factor, 32.0f);
  EXPECT_EQ(models::parameter_count(c), 1235814400);
}

TEST_F(HfConfigTest, HeadDimMayDifferFromHiddenOverHeads) {
  LlamaConfig c = load_hf_config(edited(R"("hidden_size": 4096,)",
                                        R"("hidden_size": 4096, "head_dim": 64,)"));
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.q_dim(), 32 * 64);
}

TEST_F(HfConfigTest, Llama2DefaultsKvHeadsAndTheta) {
  LlamaConfig c = load_hf_config(write(kLlama2_7B));
  EXPECT_EQ(c.kv_heads, 32);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_FLOAT_EQ(c.rope.theta, 10000.0f);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(c.torch_dtype, "float16");
  EXPECT_EQ(models::parameter_count(c), 6738415616);
}

TEST_F(HfConfigTest, NullOptionalFieldsTakeTheirDefaults) {
  LlamaConfig c = load_hf_config(edited(R"("num_key_value_heads": 8,)",
                                        R"("num_key_value_heads": null, "head_dim": null,)"));
  EXPECT_EQ(c.kv_heads, 32);
  EXPECT_EQ(c.head_dim, 128);
}

TEST_F(HfConfigTest, ParameterCountOf70BPreset) {
  EXPECT_EQ(models::parameter_count(models::preset("llama3-70b")), 70553706496);
}

TEST_F(HfConfigTest, MissingField) {
  expect_error(edited(R"("num_attention_heads": 32,)", ""),
               "missing field \"num_attention_heads\"");
  expect_error(edited(R"("vocab_size": 128256)", R"("unused": 0)"), "missing field \"vocab_size\"");
  expect_error(edited(R"("rms_norm_eps": 1e-05,)", ""), "missing field \"rms_norm_eps\"");
}

TEST_F(HfConfigTest, MissingLlama3RopeField) {
  expect_error(edited(R"("rope_scaling": null,)",
                      R"("rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                          "low_freq_factor": 1.0, "original_max_position_embeddings": 8192},)"),
               "missing field \"rope_scaling.high_freq_factor\"");
}

TEST_F(HfConfigTest, WrongType) {
  expect_error(edited(R"("hidden_size": 4096,)", R"("hidden_size": "4096",)"),
               "field \"hidden_size\" must be an integer, got string");
  expect_error(edited(R"("hidden_size": 4096,)", R"("hidden_size": 4096.5,)"),
               "field \"hidden_size\" must be an integer");
  expect_error(edited(R"("rms_norm_eps": 1e-05,)", R"("rms_norm_eps": [1e-05],)"),
               "field \"rms_norm_eps\" must be a number, got array");
  expect_error(edited(R"("tie_word_embeddings": false,)", R"("tie_word_embeddings": 0,)"),
               "field \"tie_word_embeddings\" must be a boolean");
  expect_error(edited(R"("rope_scaling": null,)", R"("rope_scaling": "llama3",)"),
               "field \"rope_scaling\" must be an object");
  expect_error(edited(R"("torch_dtype": "bfloat16",)", R"("torch_dtype": 16,)"),
               "field \"torch_dtype\" must be a string");
}

TEST_F(HfConfigTest, BadValues) {
  expect_error(edited(R"("num_hidden_layers": 32,)", R"("num_hidden_layers": 0,)"),
               "\"num_hidden_layers\" must be positive");
  expect_error(edited(R"("num_key_value_heads": 8,)", R"("num_key_value_heads": 5,)"),
               "num_attention_heads 32 is not a multiple of num_key_value_heads 5");
  expect_error(edited(R"("rms_norm_eps": 1e-05,)", R"("rms_norm_eps": -1,)"),
               "\"rms_norm_eps\" must be a positive number");
}

TEST_F(HfConfigTest, UnsupportedArchitecture) {
  std::string mistral = edited(R"("model_type": "llama",)", R"("model_type": "mistral",)");
  expect_error(mistral, "unsupported architecture");
  expect_error(mistral, "mistral");
  expect_error(edited(R"(["LlamaForCausalLM"])", R"(["MistralForCausalLM"])"),
               "unsupported architecture \"MistralForCausalLM\"");
}

TEST_F(HfConfigTest, ArchitecturesAloneIdentifyLlama) {
  LlamaConfig c = load_hf_config(edited(R"("model_type": "llama",)", ""));
  EXPECT_EQ(c.hidden, 4096);
  std::string text = kLlama3_8B;
  text.replace(text.find(R"("architectures": ["LlamaForCausalLM"],)"),
               std::string(R"("architectures": ["LlamaForCausalLM"],)").size(), "");
  text.replace(text.find(R"("model_type": "llama",)"),
               std::string(R"("model_type": "llama",)").size(), "");
  expect_error(write(text), "missing field \"model_type\"");
}

TEST_F(HfConfigTest, UnsupportedFeatures) {
  expect_error(edited(R"("attention_bias": false,)", R"("attention_bias": true,)"),
               "\"attention_bias\" is true");
  expect_error(edited(R"("hidden_act": "silu",)", R"("hidden_act": "gelu",)"),
               "unsupported hidden_act \"gelu\"");
}

TEST_F(HfConfigTest, UnsupportedRopeType) {
  for (const char* type : {"linear", "dynamic", "yarn"}) {
    std::string scaling = std::string(R"("rope_scaling": {"rope_type": ")") + type +
                          R"(", "factor": 2.0},)";
    expect_error(edited(R"("rope_scaling": null,)", scaling),
                 std::string("unsupported rope_type \"") + type + "\"");
  }
  expect_error(edited(R"("rope_scaling": null,)",
                      R"("rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6},)"),
               "unsupported rope_type \"yarn\" in \"rope_parameters\"");
  expect_error(edited(R"("rope_scaling": null,)", R"("rope_scaling": {"factor": 2.0},)"),
               "missing field \"rope_scaling.rope_type\"");
}

TEST_F(HfConfigTest, BadJson) {
  expect_error(write("{\n  \"hidden_size\": 4096,\n  \"vocab_size\": }\n"),
               "invalid JSON at line 3, column 17");
  expect_error(write(""), "invalid JSON");
  expect_error(write("[1, 2]"), "expected a JSON object at the top level, got array");
}

TEST_F(HfConfigTest, MissingFile) {
  expect_error((dir_ / "absent.json").string(), "cannot open");
}

// A FIFO named config.json is refused at once; opening it for reading would block.
TEST_F(HfConfigTest, FifoIsRefusedWithoutBlocking) {
  const std::string p = (dir_ / "config.json").string();
  ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0);
  expect_error(p, "not a regular file");
}

// Numbers beyond a double are one line naming the field, not a raw parser exception.
TEST_F(HfConfigTest, OutOfRangeNumberNamesTheField) {
  expect_error(edited(R"("rope_theta": 500000.0,)", R"("rope_theta": 1e400,)"),
               "invalid JSON in field \"rope_theta\": number overflow parsing '1e400'");
  expect_error(edited(R"("rope_scaling": null,)", R"("rope_scaling": {"factor": -1e999},)"),
               "invalid JSON in field \"rope_scaling.factor\"");
}

// JSON parsers disagree on which of two equal keys wins: refuse, naming the key.
TEST_F(HfConfigTest, DuplicateKeyIsAnError) {
  expect_error(edited(R"("hidden_size": 4096,)", R"("hidden_size": 4096, "hidden_size": 8192,)"),
               "duplicate key \"hidden_size\"");
  expect_error(edited(R"("rope_scaling": null,)",
                      R"("rope_scaling": {"rope_type": "llama3", "factor": 8, "factor": 2},)"),
               "duplicate key \"rope_scaling.factor\"");
  // The same key in two different objects is fine.
  LlamaConfig c = load_hf_config(edited(
      R"("rope_scaling": null,)",
      R"("rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1,
          "high_freq_factor": 4, "original_max_position_embeddings": 8192, "rope_theta": 1e4},)"));
  EXPECT_FLOAT_EQ(c.rope.theta, 1e4f);
}

// Sizes whose products would overflow int64 (q_dim = heads x head_dim, the parameter
// count) are refused with the field's name before anything multiplies them.
TEST_F(HfConfigTest, HugeSizesAreRefusedBeforeTheyOverflow) {
  expect_error(edited(R"("num_attention_heads": 32,)",
                      R"("num_attention_heads": 4611686018427387904, "head_dim": 4,)"),
               "num_attention_heads 4611686018427387904 is above the limit of 16777216");
  expect_error(edited(R"("num_attention_heads": 32,)",
                      R"("num_attention_heads": 1048576, "head_dim": 1024,)"),
               "num_attention_heads x head_dim = 1048576 x 1024");
  expect_error(edited(R"("num_hidden_layers": 32,)", R"("num_hidden_layers": 16777216,)"),
               "parameters, above the limit");
  expect_error(edited(R"("max_position_embeddings": 8192,)", R"("max_position_embeddings": 0,)"),
               "\"max_position_embeddings\" must be positive");
}

}  // namespace
