// train70b as users meet it: --help shows the defaults; a short run from a
// Hugging Face directory lowers the held-out loss and writes a PEFT adapter and
// metrics; bad flags, missing files, bad JSON and wrong shapes end with one line on
// stderr that names the user's file and place (never a source path), a non-zero exit,
// and no output directory.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>

#include "engine/io/safetensors.h"
#include "models/llama.h"
#include "tools/train/trainer.h"
#include "tests/support/process.h"

namespace fs = std::filesystem;

namespace {

using testing_support::RunResult;

RunResult run(const std::string& args) {
  return testing_support::run_command(std::string(TRAIN70B_PATH) + " " + args);
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

  // A Hugging Face model directory: config.json + model.safetensors of a random tiny Llama;
  // with `broken`, one weight has a wrong shape and *broken is its name.
  std::string make_hf_model(std::string* broken = nullptr) const {
    fs::path model = dir_ / "model";
    fs::create_directories(model);
    std::ofstream(model / "config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "intermediate_size": 48, "vocab_size": 40, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
      "tie_word_embeddings": false, "torch_dtype": "bfloat16"})";
    models::LlamaConfig c = models::preset("tiny");
    c.hidden = 32, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.head_dim = 8, c.intermediate = 48, c.vocab = 40;
    models::NamedTensors weights = models::LlamaModel(c, 5).named_parameters();
    if (broken) {
      weights[3].second = engine::Tensor::zeros({7, 7});
      *broken = weights[3].first;
    }
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

  // One line on stderr, holding every needle and no place in the engine's sources.
  static void expect_one_line_error(const RunResult& r, std::initializer_list<std::string> needles) {
    EXPECT_NE(r.exit_code, 0) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("train70b: ", 0), 0u) << r.err;
    for (const std::string& needle : needles)
      EXPECT_NE(r.err.find(needle), std::string::npos) << needle << "\n" << r.err;
    for (const char* source : {ENGINE_SOURCE_DIR, ".cpp:", ".h:", ".cu:", ".cuh:"})
      EXPECT_EQ(r.err.find(source), std::string::npos) << source << "\n" << r.err;
  }
  static void expect_one_line_error(const RunResult& r, const std::string& needle) {
    expect_one_line_error(r, {needle});
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
  std::string broken;
  std::string model = make_hf_model(&broken);
  expect_one_line_error(run("--model " + model + " --dataset " + make_token_dataset() + out), "shape");
  write("model/config.json", "{\"model_type\": \"llama\",");
  expect_one_line_error(run("--model " + model + " --dataset " + make_token_dataset() + out), "config.json");
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

// What was a check in the sources (file:line of models/llama.cpp and the like) reads as
// the user's file and place, or the flag.
TEST_F(Train70b, UserErrorsNameTheUsersFileNotTheSources) {
  const std::string out = " --output " + path("out");
  std::string broken;
  const std::string model = make_hf_model(&broken);
  const std::string data = " --dataset " + make_token_dataset();
  expect_one_line_error(run("--model " + model + data + out),
                        {(fs::path(model) / "model.safetensors").string() + ": weight '" + broken +
                             "' has shape [7, 7], expected [",
                         broken});
  make_hf_model();  // the shapes right again
  write("text.jsonl", "{\"text\": \"no tokenizer for this\"}\n");
  expect_one_line_error(run("--model " + model + " --dataset " + path("text.jsonl") + out),
                        {path("text.jsonl") + ":1: ", "tokenizer"});
  write("one.jsonl", "{\"input_ids\": [1, 2, 3]}\n");
  expect_one_line_error(run("--model " + model + " --dataset " + path("one.jsonl") + out),
                        {path("one.jsonl") + ": ", "--eval-fraction"});
  expect_one_line_error(run("--lora-targets q_proj,w_proj" + data + out), {"--lora-targets: ", "'w_proj'"});
  expect_one_line_error(run("--schedule step" + data + out), {"--schedule: ", "'step'"});
  expect_one_line_error(run("--model " + path("no/such/model") + data + out),
                        {"--model " + path("no/such/model") + ": no such directory"});
  expect_one_line_error(run("--model llama4" + data + out), {"--model: ", "'llama4'"});
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

// Float flags must be finite and in range; each refusal names the flag.
TEST_F(Train70b, FloatFlagsMustBeFiniteAndInRange) {
  const std::string out = " --demo --output " + path("out");
  expect_one_line_error(run("--lora-alpha inf" + out), {"--lora-alpha", "finite"});
  expect_one_line_error(run("--lora-alpha nan" + out), "--lora-alpha");
  expect_one_line_error(run("--weight-decay inf" + out), {"--weight-decay", "finite"});
  expect_one_line_error(run("--lr nan" + out), {"--lr", "nan"});
  expect_one_line_error(run("--lr inf" + out), "--lr");
  expect_one_line_error(run("--max-grad-norm inf" + out), "--max-grad-norm");
  expect_one_line_error(run("--lr 0.5 --weight-decay 3" + out), {"--weight-decay 3", "--lr 0.5"});
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

// Sizes that used to overflow (SIGFPE, "0 steps of -4.6e18", an endless loop) or to
// allocate for half a minute are refused at once, before anything is allocated.
TEST_F(Train70b, SizeFlagsAreBoundedBeforeAnyAllocation) {
  const std::string out = " --output " + path("out");
  expect_one_line_error(run("--demo --batch-size 4611686018427387904 --grad-accum 4" + out),
                        {"--batch-size 4611686018427387904", "limit"});
  expect_one_line_error(run("--demo --batch-size 4 --grad-accum 4611686018427387904" + out),
                        {"--grad-accum", "limit"});
  expect_one_line_error(run("--demo --epochs 9223372036854775807" + out), {"--epochs", "limit"});
  expect_one_line_error(run("--demo --max-steps 9223372036854775807" + out), {"--max-steps", "limit"});
  expect_one_line_error(run("--demo --lora-r 10000000" + out), {"--lora-r 10000000", "limit"});
  expect_one_line_error(run("--demo --dataset data.jsonl" + out), {"--demo", "drop --dataset data.jsonl"});
  expect_one_line_error(run("--demo --max-seq-len 100000000000" + out), {"--max-seq-len", "limit"});
  // Relative to the model and the data: the HF model has hidden 32 and k/v width 16; the
  // dataset has 120 examples, 108 of them for training (--eval-fraction 0.1).
  const std::string model = " --model " + make_hf_model() + " --dataset " + make_token_dataset();
  expect_one_line_error(run("--lora-r 17" + model + out), {"--lora-r 17", "rank 16 of k_proj"});
  expect_one_line_error(run("--batch-size 1000000" + model + out),
                        {"--batch-size 1000000", "108 training examples"});
  expect_one_line_error(run("--batch-size 60 --grad-accum 2" + model + out),
                        {"--grad-accum 2 = 120", "108 training examples"});
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

// The output directory is checked first: a path that cannot be written fails at once,
// not after the model has loaded (minutes for 70B). The model here is broken too, and the
// error is about --output.
TEST_F(Train70b, OutputIsCheckedBeforeTheModelLoads) {
  write("blocker", "a file where a directory should be");
  std::string broken;
  const std::string model = make_hf_model(&broken);
  RunResult r = run("--model " + model + " --dataset " + make_token_dataset() + " --output " +
                    path("blocker/out"));
  expect_one_line_error(r, {"--output " + path("blocker/out"), path("blocker") + " is not a directory"});
  EXPECT_EQ(r.err.find(broken), std::string::npos) << r.err;
  // Nothing is left behind by the check itself.
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(".train70b-write-test"), std::string::npos);
}

// A non-finite base weight is refused at load with the file and the tensor.
TEST_F(Train70b, NonFiniteBaseWeightIsRefused) {
  const std::string model = make_hf_model();
  {
    engine::io::SafetensorsFile f((fs::path(model) / "model.safetensors").string());
    models::NamedTensors weights;
    for (const std::string& n : f.names()) weights.push_back({n, f.load(n)});
    for (auto& [n, t] : weights)
      if (n == "model.norm.weight")
        t = engine::Tensor::full({32}, INFINITY).to_dtype(engine::DType::BF16);
    engine::io::write_safetensors((fs::path(model) / "model.safetensors").string(), weights);
  }
  expect_one_line_error(run("--model " + model + " --dataset " + make_token_dataset() + " --output " + path("out")),
                        {(fs::path(model) / "model.safetensors").string() + ": weight 'model.norm.weight'",
                         "non-finite"});
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

// Sequences longer than the config's max_position_embeddings are trained, with a warning
// that says how many and how to truncate them.
TEST_F(Train70b, LongerThanMaxPositionEmbeddingsWarns) {
  train::TrainOptions o;
  o.model = make_hf_model();
  std::ifstream in(fs::path(o.model) / "config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config["max_position_embeddings"] = 10;  // the dataset's sequences have 12 tokens
  std::ofstream(fs::path(o.model) / "config.json") << config.dump();
  o.dataset = make_token_dataset();
  o.output = path("out");
  o.max_steps = 1;
  std::ostringstream log;
  train::run_training(o, log);
  EXPECT_NE(log.str().find("warning: 120 examples are longer than the model's max_position_embeddings 10"),
            std::string::npos)
      << log.str();
  EXPECT_NE(log.str().find("--max-seq-len 10"), std::string::npos) << log.str();
  std::ostringstream quiet;
  o.max_seq_len = 10;
  train::run_training(o, quiet);
  EXPECT_EQ(quiet.str().find("warning"), std::string::npos) << quiet.str();
}

// The NaN/Inf guard. LoRA alpha 1e20 with lr 0.5 makes the tiny model's loss non-finite
// from the second step on: those updates are skipped and counted, K in a row stop the run
// with one line and a non-zero exit, and no adapter is written.
TEST_F(Train70b, NonFiniteStepsAreSkippedAndStopTheRun) {
  RunResult r = run("--demo --lora-alpha 1e20 --lr 0.5 --max-steps 40 --max-nonfinite-steps 3 --output " +
                    path("out"));
  expect_one_line_error(r, {"training diverged: 3 steps in a row", "--max-nonfinite-steps 3",
                            path("out/metrics.jsonl")});
  EXPECT_FALSE(fs::exists(dir_ / "out" / "adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "out" / "adapter_config.json"));
  std::ifstream metrics(dir_ / "out" / "metrics.jsonl");
  int skipped = 0, stopped = 0;
  for (std::string line; std::getline(metrics, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j["event"] == "train" && j["skipped"] == true) {
      ++skipped;
      EXPECT_EQ(j["nonfinite_steps"], skipped);
    }
    stopped += j["event"] == "stopped";
  }
  EXPECT_EQ(skipped, 3);
  EXPECT_EQ(stopped, 1);

  // Below the limit the run finishes; the skipped steps are counted, and the adapter it
  // writes holds only finite values (the skipped updates never reached it).
  train::TrainOptions o;
  o.demo = true;
  o.lora_alpha = 1e20f;
  o.lr = 0.5f;
  o.max_steps = 6;
  o.max_nonfinite_steps = 100;
  o.output = path("out2");
  std::ostringstream log;
  train::RunSummary s = train::run_training(o, log);
  EXPECT_GE(s.nonfinite_steps, 1) << log.str();
  EXPECT_NE(log.str().find("update skipped"), std::string::npos) << log.str();
  engine::io::SafetensorsFile adapter((dir_ / "out2" / "adapter_model.safetensors").string());
  for (const std::string& n : adapter.names())
    for (float v : adapter.load(n).to_floats()) ASSERT_TRUE(std::isfinite(v)) << n;
}

// paged_adamw_8bit against 32-bit AdamW on the demo (issue 11): LoRA r 32, so that the
// MLP factors (4,096 elements) keep 8-bit moments while the smaller ones stay fp32. The
// stated margin: the 8-bit run's held-out loss within 2% of the 32-bit run's after 100 steps
// (measured: 1.3138 against 1.3130, 0.06%).
TEST_F(Train70b, EightBitOptimizerTrainsTheDemoWithinTwoPercentOfThirtyTwoBit) {
  double loss[2] = {0, 0};
  const char* optims[2] = {"adamw", "paged_adamw_8bit"};
  for (int i = 0; i < 2; ++i) {
    const std::string out = path(optims[i]);
    const RunResult r = run("--demo --lora-r 32 --max-steps 100 --save-every 100 --log-every 1000 --optim " +
                            std::string(optims[i]) + " --output " + out);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::ifstream metrics(fs::path(out) / "metrics.jsonl");
    for (std::string line; std::getline(metrics, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j["event"] == "eval" && j["when"] == "after training") loss[i] = j["loss"].get<double>();
    }
    // The 8-bit run really keeps 8-bit moments (u8 codes in its checkpoint).
    const engine::io::SafetensorsFile state(
        (fs::path(out) / "checkpoints" / "checkpoint-100" / "optimizer.safetensors").string());
    bool u8 = false;
    for (const std::string& n : state.names()) u8 |= state.info(n).dtype_name == "U8";
    EXPECT_EQ(u8, i == 1) << optims[i];
  }
  ASSERT_GT(loss[0], 0);
  std::printf("[ measured ] held-out loss after 100 steps: adamw %.4f, paged_adamw_8bit %.4f\n", loss[0], loss[1]);
  EXPECT_LE(std::fabs(loss[1] - loss[0]), 0.02 * loss[0]);
}
