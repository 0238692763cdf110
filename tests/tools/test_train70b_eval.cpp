// `train70b eval` (tools/train/eval_command.h) against the numbers a training run logs for
// the same examples: with the adapter the run wrote it gives the run's "after training"
// evaluation, without one its "before training" one, bit for bit (same model set-up, same
// evaluate()). The examples are the run's --general-eval file, a dataset both sides read.
// A mismatched or missing adapter is one line naming the file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/support/process.h"
#include "tests/support/tiny_run.h"
#include "tools/train/trainer.h"

namespace fs = std::filesystem;

namespace {

class Train70bEval : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("train70b_eval_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  testing_support::RunResult eval(const std::string& args) const {
    return testing_support::run_command(std::string(TRAIN70B_PATH) + " eval " + args);
  }
  static void expect_one_line_error(const testing_support::RunResult& r, const std::string& needle) {
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("train70b eval: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << needle << "\n" << r.err;
  }
  fs::path dir_;
};

void expect_same(const nlohmann::json& j, const train::EvalResult& r, const std::string& what) {
  ASSERT_TRUE(j.is_object()) << what;
  EXPECT_EQ(j.size(), 4u) << j.dump();  // loss, perplexity, accuracy, tokens only
  EXPECT_EQ(j.at("loss").get<double>(), r.loss) << what;
  EXPECT_EQ(j.at("perplexity").get<double>(), std::exp(r.loss)) << what;
  EXPECT_EQ(j.at("accuracy").get<double>(), r.accuracy) << what;
  EXPECT_EQ(j.at("tokens").get<int64_t>(), r.tokens) << what;
}

}  // namespace

TEST_F(Train70bEval, MatchesTheTrainingRunsEvaluationsWithAndWithoutTheAdapter) {
  const std::string model = testing_support::write_tiny_hf_model((dir_ / "model").string());
  const std::string general = (dir_ / "general.jsonl").string();
  {
    std::ofstream out(general);  // sequences the training data does not hold (stride 4 and 5)
    for (int i = 0; i < 10; ++i) {
      nlohmann::json ids = nlohmann::json::array();
      for (int t = 0; t < 9 + i % 3; ++t) ids.push_back((i * 3 + (4 + i % 2) * t) % 40);
      out << nlohmann::json{{"input_ids", ids}}.dump() << "\n";
    }
  }
  train::TrainOptions o;
  o.model = model;
  o.dataset = testing_support::write_counting_dataset((dir_ / "data.jsonl").string());
  o.general_eval = general;
  o.output = (dir_ / "out").string();
  o.lr = 3e-3f;
  o.max_steps = 12;
  o.batch_size = 3;  // the evaluation batch too: eval --batch-size 3 below
  std::ostringstream log;
  const train::RunSummary s = train::run_training(o, log);
  ASSERT_GT(s.general_after.tokens, 0) << log.str();
  ASSERT_NE(s.general_after.loss, s.general_before.loss);  // the adapter changes the numbers

  const std::string common = "--model " + model + " --dataset " + general + " --batch-size 3";
  const testing_support::RunResult with = eval(common + " --adapter " + o.output);
  ASSERT_EQ(with.exit_code, 0) << with.err;
  expect_same(nlohmann::json::parse(with.out), s.general_after, "with the adapter");
  const testing_support::RunResult without = eval(common);
  ASSERT_EQ(without.exit_code, 0) << without.err;
  expect_same(nlohmann::json::parse(without.out), s.general_before, "without an adapter");

  // --output: the same JSON in a file, nothing on stdout.
  const fs::path file = dir_ / "eval.json";
  const testing_support::RunResult to_file = eval(common + " --adapter " + o.output + " --output " + file.string());
  ASSERT_EQ(to_file.exit_code, 0) << to_file.err;
  EXPECT_EQ(to_file.out, "");
  std::ifstream in(file);
  expect_same(nlohmann::json::parse(in), s.general_after, "--output");

  // The adapter on a model of another shape: one line naming the adapter's file.
  const std::string other = testing_support::write_tiny_hf_model((dir_ / "other").string(), 64);
  expect_one_line_error(eval("--model " + other + " --dataset " + general + " --adapter " + o.output),
                        (fs::path(o.output) / "adapter_model.safetensors").string() + ": '");
  expect_one_line_error(eval(common + " --adapter " + (dir_ / "nope").string()), (dir_ / "nope").string());
  expect_one_line_error(eval(common + " --adapter " + model),
                        (fs::path(model) / "adapter_config.json").string() + ": cannot open");
  expect_one_line_error(eval("--model " + model + " --dataset " + (dir_ / "missing.jsonl").string()),
                        (dir_ / "missing.jsonl").string());
  expect_one_line_error(eval("--model " + model + " --dataset " + general + " --batch-size 0"), "--batch-size");
}
