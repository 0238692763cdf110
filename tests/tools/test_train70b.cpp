// train70b as users meet it: --help shows the defaults; a short run from a
// Hugging Face directory lowers the held-out loss and writes a PEFT adapter and
// metrics; bad flags, missing files, bad JSON and wrong shapes end with one line on
// stderr, a non-zero exit, and no output directory.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/io/safetensors.h"
#include "models/llama.h"
#include "tools/train/trainer.h"

namespace fs = std::filesystem;

namespace {

struct RunResult {
  int exit_code;
  std::string out, err;
};

RunResult run(const std::string& args) {
  static int counter = 0;
  fs::path err_file = fs::temp_directory_path() / ("train70b_err_" + std::to_string(::getpid()) + "_" +
                                                   std::to_string(counter++));
  std::string cmd = std::string(TRAIN70B_PATH) + " " + args + " 2>" + err_file.string();
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 512> buf;
  while (fgets(buf.data(), buf.size(), pipe)) out += buf.data();
  int status = pclose(pipe);
  std::ifstream in(err_file);
  std::string err((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  fs::remove(err_file);
  return {WEXITSTATUS(status), out, err};
}

class Train70b : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("train70b_test_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(dir_ / name) << text; }

  // A Hugging Face model directory: config.json + model.safetensors of a random tiny Llama.
  std::string make_hf_model(bool break_a_shape = false) const {
    fs::path model = dir_ / "model";
    fs::create_directories(model);
    std::ofstream(model / "config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "intermediate_size": 48, "vocab_size": 40, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
      "tie_word_embeddings": false, "torch_dtype": "bfloat16"})";
    models::LlamaConfig c = models::preset("tiny");
    c.hidden = 32, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.head_dim = 8, c.intermediate = 48, c.vocab = 40;
    models::NamedTensors weights = models::LlamaModel(c, 5).named_parameters();
    if (break_a_shape) weights[3].second = engine::Tensor::zeros({7, 7});
    for (auto& [name, t] : weights) t = t.to_dtype(engine::DType::BF16);  // as HF ships them
    engine::io::write_safetensors((model / "model.safetensors").string(), weights, {{"format", "pt"}});
    return model.string();
  }

  // Pre-tokenized counting sequences over a 40-token vocabulary.
  std::string make_token_dataset() const {
    std::ofstream out(dir_ / "data.jsonl");
    for (int i = 0; i < 120; ++i) {
      nlohmann::json ids = nlohmann::json::array();
      for (int t = 0; t < 12; ++t) ids.push_back((i % 7 + (1 + i % 3) * t) % 40);
      out << nlohmann::json{{"input_ids", ids}}.dump() << "\n";
    }
    return path("data.jsonl");
  }

  static void expect_one_line_error(const RunResult& r, const std::string& needle) {
    EXPECT_NE(r.exit_code, 0) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  }

  fs::path dir_;
};

}  // namespace

TEST_F(Train70b, HelpShowsDefaults) {
  RunResult r = run("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* s : {"--lr FLOAT=0.0001", "--epochs INT=3", "--lora-r INT=16", "--lora-alpha FLOAT=32",
                        "--lora-dropout FLOAT=0.05", "--lora-targets TEXT=all-linear"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
}

TEST_F(Train70b, TrainsFromHfDirectoryAndWritesAdapter) {
  train::TrainOptions o;
  o.model = make_hf_model();
  o.dataset = make_token_dataset();
  o.output = path("out");
  o.lr = 3e-3f;
  o.epochs = 2;
  o.batch_size = 6;
  o.grad_accum = 2;
  o.eval_fraction = 0.2f;
  o.schedule = "cosine";
  std::ostringstream log;
  train::RunSummary s = train::run_training(o, log);
  EXPECT_LT(s.after.loss, s.before.loss) << log.str();
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors", "metrics.jsonl"})
    EXPECT_TRUE(fs::exists(dir_ / "out" / f)) << f;
  EXPECT_FALSE(fs::exists(dir_ / "out" / "metrics.jsonl.partial"));
  std::ifstream metrics(dir_ / "out" / "metrics.jsonl");
  int train_lines = 0, eval_lines = 0;
  for (std::string line; std::getline(metrics, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    (j["event"] == "train" ? train_lines : eval_lines) += 1;
  }
  EXPECT_EQ(train_lines, s.steps);
  EXPECT_EQ(eval_lines, 2);
  engine::io::SafetensorsFile adapter((dir_ / "out" / "adapter_model.safetensors").string());
  EXPECT_EQ(adapter.names().size(), 2u * 7 * 2);
}

TEST_F(Train70b, BadFlagsAreOneLineErrors) {
  expect_one_line_error(run("--lora-r abc --demo --output " + path("o1")), "--lora-r");
  expect_one_line_error(run("--no-such-flag"), "no-such-flag");
  expect_one_line_error(run("--lr -1 --demo --output " + path("o2")), "--lr");
  expect_one_line_error(run("--schedule step --demo --output " + path("o3")), "step");
  expect_one_line_error(run("--lora-targets q_proj,w_proj --demo --output " + path("o4")), "w_proj");
  expect_one_line_error(run("--output " + path("o5")), "--dataset");
  for (const char* o : {"o1", "o2", "o3", "o4", "o5"}) EXPECT_FALSE(fs::exists(dir_ / o)) << o;
}

TEST_F(Train70b, BadFilesAreOneLineErrorsAndWriteNothing) {
  const std::string out = " --output " + path("out");
  expect_one_line_error(run("--dataset " + path("missing.jsonl") + out), "missing.jsonl");
  write("bad.jsonl", "{\"text\": \"fine\"}\n{\"text\": oops}\n");
  expect_one_line_error(run("--dataset " + path("bad.jsonl") + out), "bad.jsonl:2");
  write("wrong.jsonl", "{\"text\": 17}\n");
  expect_one_line_error(run("--dataset " + path("wrong.jsonl") + out), "wrong.jsonl:1");
  std::string model = make_hf_model(/*break_a_shape=*/true);
  expect_one_line_error(run("--model " + model + " --dataset " + make_token_dataset() + out), "shape");
  write("model/config.json", "{\"model_type\": \"llama\",");
  expect_one_line_error(run("--model " + model + " --dataset " + make_token_dataset() + out), "config.json");
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}
