// `train70b tokenize` as users run it, and training from a model directory that brings
// its own tokenizer: the ids are those of the tokenizers package (the committed
// reference of tests/data/tokenizer_reference), errors are one line naming the place.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/io/safetensors.h"
#include "models/llama.h"
#include "models/tokenizer.h"
#include "tests/support/process.h"

namespace fs = std::filesystem;

namespace {

using json = nlohmann::json;
const std::string kRef = std::string(ENGINE_SOURCE_DIR) + "/tests/data/tokenizer_reference";

using testing_support::RunResult;

RunResult run(const std::string& args) {
  return testing_support::run_command(std::string(TRAIN70B_PATH) + " " + args);
}

class Train70bTokenize : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("train70b_tokenize_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string unhex(const std::string& hex) const {
    std::string out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2)
      out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
    return out;
  }

  // The reference texts that are valid UTF-8 (JSON carries no invalid UTF-8), as JSONL.
  std::vector<json> write_cases(const std::string& name) const {
    std::ifstream in(kRef + "/cases.json");
    const json ref = json::parse(in);
    std::ofstream out(dir_ / name);
    std::vector<json> kept;
    for (const json& c : ref["cases"]) {
      const std::string text = unhex(c["hex"].get<std::string>());
      try {
        out << json{{"text", text}}.dump() << "\n";
      } catch (const json::exception&) {
        continue;  // invalid UTF-8
      }
      kept.push_back(c);
    }
    return kept;
  }

  fs::path dir_;
};

std::vector<std::vector<int32_t>> parse_ids(const std::string& out) {
  std::vector<std::vector<int32_t>> rows;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) rows.push_back(json::parse(line).at("ids").get<std::vector<int32_t>>());
  return rows;
}

TEST_F(Train70bTokenize, IdsOfTheTokenizersPackage) {
  const std::vector<json> cases = write_cases("in.jsonl");
  ASSERT_GE(cases.size(), 20u);
  for (bool special : {true, false}) {
    const RunResult r = run("tokenize --model " + kRef + "/bpe" + (special ? "" : " --no-special-tokens") +
                                " " + (dir_ / "in.jsonl").string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto rows = parse_ids(r.out);
    ASSERT_EQ(rows.size(), cases.size());
    for (size_t i = 0; i < rows.size(); ++i)
      EXPECT_EQ(rows[i], cases[i][special ? "bpe_hf_bos" : "bpe_hf"].get<std::vector<int32_t>>()) << i;
  }
  // SentencePiece, from standard input; its BOS first.
  const RunResult r = run("tokenize --model " + kRef + "/sp < " + (dir_ / "in.jsonl").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rows = parse_ids(r.out);
  ASSERT_EQ(rows.size(), cases.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    if (unhex(cases[i]["hex"].get<std::string>()).find("<") != std::string::npos) continue;
    std::vector<int32_t> want{1};
    for (const json& id : cases[i]["sp"]) want.push_back(id.get<int32_t>());
    EXPECT_EQ(rows[i], want) << i;
  }
}

TEST_F(Train70bTokenize, ErrorsNameThePlace) {
  std::ofstream(dir_ / "bad.jsonl") << "{\"text\": \"ok\"}\n\n{\"txt\": 1}\n";
  RunResult r = run("tokenize --model " + kRef + "/bpe " + (dir_ / "bad.jsonl").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bad.jsonl:3: expected an object with a \"text\" string"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = run("tokenize --model " + dir_.string() + " " + (dir_ / "bad.jsonl").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no tokenizer.json or tokenizer.model"), std::string::npos) << r.err;
  r = run("tokenize " + (dir_ / "bad.jsonl").string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--model"), std::string::npos) << r.err;
}

// A Hugging Face directory with tokenizer.json trains on {"text": ...} lines (before, such
// a model took only pre-tokenized data).
TEST_F(Train70bTokenize, TrainingUsesTheDirectorysTokenizer) {
  const fs::path model = dir_ / "model";
  fs::create_directories(model);
  const int64_t vocab = models::load_tokenizer(kRef + "/bpe")->vocab_size();
  std::ofstream(model / "config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 48, "vocab_size": )" << vocab << R"(, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "torch_dtype": "float32"})";
  models::LlamaConfig c = models::preset("tiny");
  c.hidden = 32, c.layers = 1, c.heads = 4, c.kv_heads = 2, c.head_dim = 8, c.intermediate = 48, c.vocab = vocab;
  engine::io::write_safetensors((model / "model.safetensors").string(),
                                models::LlamaModel(c, 5).named_parameters(), {{"format", "pt"}});
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(kRef + "/bpe/" + f, model / f);
  {
    std::ofstream data(dir_ / "text.jsonl");
    for (int i = 0; i < 40; ++i)
      data << json{{"text", "The model learns " + std::to_string(i) + " things, 你好 世界."}}.dump() << "\n";
  }
  const RunResult r = run("--model " + model.string() + " --dataset " + (dir_ / "text.jsonl").string() +
                              " --output " + (dir_ / "out").string() +
                              " --max-steps 2 --batch-size 2 --max-seq-len 32 --base-format f32");
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_TRUE(fs::exists(dir_ / "out" / "adapter_model.safetensors")) << r.out;

  // A tokenizer with more tokens than the model's embedding is refused, naming both.
  std::ofstream(model / "config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 48, "vocab_size": 300, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "torch_dtype": "float32"})";
  const RunResult small = run("--model " + model.string() + " --dataset " + (dir_ / "text.jsonl").string() +
                                  " --output " + (dir_ / "out2").string() + " --max-steps 1");
  EXPECT_EQ(small.exit_code, 1);
  EXPECT_NE(small.err.find("the tokenizer has " + std::to_string(vocab) +
                           " tokens, more than config.json's vocab_size 300"),
            std::string::npos)
      << small.err;
}

}  // namespace
