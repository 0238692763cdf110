// A train70b run as a whole (issue 13): held-out evaluation before step 1, every
// --eval-every steps and at the end; --eval-fraction 0 means none and says so; the
// --general-eval forgetting check in the summary; the charts a run leaves and those
// `train70b plot` draws while a run writes; run_config.json repeats a run (--config), with
// command-line flags overriding it.
#include <gtest/gtest.h>
#include <signal.h>
#include <tinyxml2.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "tests/support/process.h"
#include "tests/support/tiny_run.h"
#include "tools/train/evaluate.h"
#include "tools/train/run_config.h"
#include "tools/train/run_output.h"
#include "tools/train/trainer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

class Train70bRuns : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("train70b_runs_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A short run of the tiny HF model on the counting dataset.
  train::TrainOptions tiny_run(const std::string& output) {
    train::TrainOptions o;
    o.model = testing_support::write_tiny_hf_model(path("model"));
    o.dataset = testing_support::write_counting_dataset(path("data.jsonl"));
    o.output = path(output);
    o.lr = 3e-3f;
    o.max_steps = 9;
    o.batch_size = 3;
    return o;
  }
  static testing_support::RunResult train70b(const std::string& args) {
    return testing_support::run_command(std::string(TRAIN70B_PATH) + " " + args);
  }
  fs::path dir_;
};

std::vector<json> read_metrics(const fs::path& file) {
  std::ifstream in(file);
  std::vector<json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  return lines;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A chart's series read back in data units (svg_chart.h: the plot area and the domain the
// root states): polylines' and dots' points per data-series, legend-free.
std::map<std::string, std::vector<std::pair<double, double>>> chart_points(const std::string& svg) {
  tinyxml2::XMLDocument doc;
  EXPECT_EQ(doc.Parse(svg.c_str(), svg.size()), tinyxml2::XML_SUCCESS);
  std::map<std::string, std::vector<std::pair<double, double>>> out;
  const tinyxml2::XMLElement* root = doc.RootElement();
  if (!root) return out;
  const double x0 = root->DoubleAttribute("data-x0"), x1 = root->DoubleAttribute("data-x1");
  const double y0 = root->DoubleAttribute("data-y0"), y1 = root->DoubleAttribute("data-y1");
  EXPECT_FALSE(root->BoolAttribute("data-log-y"));
  double left = 0, top = 0, width = 1, height = 1;
  for (const tinyxml2::XMLElement* e = root->FirstChildElement(); e; e = e->NextSiblingElement())
    if (e->Attribute("class") && std::string(e->Attribute("class")) == "plot-area")
      left = e->DoubleAttribute("x"), top = e->DoubleAttribute("y"), width = e->DoubleAttribute("width"),
      height = e->DoubleAttribute("height");
  auto data = [&](double px, double py) {
    return std::pair{x0 + (px - left) / width * (x1 - x0), y0 + (top + height - py) / height * (y1 - y0)};
  };
  for (const tinyxml2::XMLElement* e = root->FirstChildElement(); e; e = e->NextSiblingElement()) {
    const char* series = e->Attribute("data-series");
    if (!series) continue;
    if (std::string(e->Name()) == "circle") {  // a marker or a one-point run
      if (!e->Attribute("class")) out[series].push_back(data(e->DoubleAttribute("cx"), e->DoubleAttribute("cy")));
      else out[std::string(series) + " markers"].push_back(data(e->DoubleAttribute("cx"), e->DoubleAttribute("cy")));
    } else if (std::string(e->Name()) == "polyline") {
      std::istringstream in(e->Attribute("points"));
      for (std::string pair; in >> pair;) {
        const size_t comma = pair.find(',');
        out[series].push_back(data(std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1))));
      }
    }
  }
  return out;
}

// Coordinates carry 2 decimals: half a hundredth of a pixel of a 760 x 380 chart, in data
// units of a domain `range` wide, is below range / 10^4.
constexpr double kPixelRounding = 1e-4;

// Held-out evaluations at step 0 (before step 1), at every multiple of --eval-every, and
// once at the end (the last step is not evaluated twice), over the same tokens each time;
// the charts the run leaves hold those evaluations and every train line's lr and loss.
TEST_F(Train70bRuns, EvaluatesBeforeEveryNStepsAndAtTheEndAndPlotsIt) {
  train::TrainOptions o = tiny_run("out");
  o.eval_every = 3;
  std::ostringstream log;
  const train::RunSummary s = train::run_training(o, log);
  const std::vector<json> metrics = read_metrics(dir_ / "out" / "metrics.jsonl");
  std::vector<json> evals, trains;
  for (const json& j : metrics) {
    if (j["event"] == "eval") evals.push_back(j);
    if (j["event"] == "train") trains.push_back(j);
  }
  ASSERT_EQ(evals.size(), 4u) << log.str();
  const std::vector<std::pair<int, std::string>> want = {
      {0, "before training"}, {3, "after step 3"}, {6, "after step 6"}, {9, "after training"}};
  for (size_t i = 0; i < evals.size(); ++i) {
    EXPECT_EQ(evals[i]["split"], "held-out");
    EXPECT_EQ(evals[i]["step"], want[i].first);
    EXPECT_EQ(evals[i]["when"], want[i].second);
    EXPECT_EQ(evals[i]["tokens"], s.before.tokens);  // the same held-out set each time
    EXPECT_DOUBLE_EQ(evals[i]["perplexity"].get<double>(), std::exp(evals[i]["loss"].get<double>()));
  }
  // The first evaluation precedes the first train line; 12 of the 120 examples are held out.
  for (const json& j : metrics) {
    if (j["event"] == "train") ADD_FAILURE() << "a train line before the first evaluation";
    if (j["event"] == "eval") break;
  }
  EXPECT_EQ(s.before.tokens, 12 * 11);
  EXPECT_EQ(evals.front()["loss"].get<double>(), s.before.loss);
  EXPECT_EQ(evals.back()["loss"].get<double>(), s.after.loss);
  EXPECT_LT(s.after.loss, s.before.loss);
  for (const char* line : {"held-out before training: loss", "held-out after step 3: loss",
                           "held-out after step 6: loss", "held-out after training: loss"})
    EXPECT_NE(log.str().find(line), std::string::npos) << line << "\n" << log.str();
  const json run_config = json::parse(slurp(dir_ / "out" / "run_config.json"));
  EXPECT_EQ(run_config["resolved"]["train_examples"], 108);
  EXPECT_EQ(run_config["resolved"]["eval_examples"], 12);
  EXPECT_EQ(log.str().find("identical copy"), std::string::npos);  // 120 distinct sequences

  // The charts: the held-out series is the four evaluations, the lr and train loss series
  // are the train lines, throughput has the per-step and the average series.
  const fs::path plots = dir_ / "out" / "plots";
  auto loss = chart_points(slurp(plots / "loss.svg"));
  ASSERT_EQ(loss["held-out loss"].size(), 4u);
  ASSERT_EQ(loss["held-out loss markers"].size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const auto [x, y] = loss["held-out loss"][i];
    EXPECT_NEAR(x, want[i].first, 10 * kPixelRounding);
    EXPECT_NEAR(y, evals[i]["loss"].get<double>(), 10 * kPixelRounding);
  }
  ASSERT_EQ(loss["train loss"].size(), trains.size());
  auto lr = chart_points(slurp(plots / "learning_rate.svg"));
  ASSERT_EQ(lr["lr"].size(), trains.size());
  for (size_t i = 0; i < trains.size(); ++i) {
    EXPECT_NEAR(loss["train loss"][i].second, trains[i]["loss"].get<double>(), 10 * kPixelRounding) << i;
    EXPECT_NEAR(lr["lr"][i].first, trains[i]["step"].get<double>(), 10 * kPixelRounding) << i;
    EXPECT_NEAR(lr["lr"][i].second, trains[i]["lr"].get<double>(), o.lr * kPixelRounding) << i;
  }
  auto rate = chart_points(slurp(plots / "tokens_per_second.svg"));
  EXPECT_EQ(rate["this step"].size(), trains.size());
  EXPECT_EQ(rate["average since start"].size(), trains.size());
  EXPECT_EQ(chart_points(slurp(plots / "grad_norm.svg"))["grad norm"].size(), trains.size());
  EXPECT_FALSE(chart_points(slurp(plots / "memory.svg"))["host (RSS)"].empty());
}

// --eval-fraction 0: every example trains, no held-out evaluation happens (not even with
// --eval-every), and the log says so.
TEST_F(Train70bRuns, EvalFractionZeroMeansNoHeldOutEvaluationAndSaysSo) {
  train::TrainOptions o = tiny_run("out");
  o.eval_fraction = 0;
  o.eval_every = 2;
  std::ostringstream log;
  const train::RunSummary s = train::run_training(o, log);
  EXPECT_NE(log.str().find("no held-out evaluation: --eval-fraction 0"), std::string::npos) << log.str();
  EXPECT_EQ(log.str().find("held-out before"), std::string::npos) << log.str();
  EXPECT_EQ(s.before.tokens, 0);
  EXPECT_EQ(s.after.tokens, 0);
  EXPECT_FALSE(s.report.best_eval.has_value());
  for (const json& j : read_metrics(dir_ / "out" / "metrics.jsonl")) EXPECT_NE(j["event"], "eval") << j.dump();
  const json run_config = json::parse(slurp(dir_ / "out" / "run_config.json"));
  EXPECT_EQ(run_config["resolved"]["train_examples"], 120);
  EXPECT_EQ(run_config["resolved"]["eval_examples"], 0);
  EXPECT_TRUE(chart_points(slurp(dir_ / "out" / "plots" / "loss.svg"))["held-out loss"].empty());
}

// Training on ascending sequences makes descending ones (the general text) less likely: the
// summary table, which --quiet keeps, flags it; a threshold above the rise does not.
TEST_F(Train70bRuns, ForgettingAboveTheThresholdIsFlaggedInTheSummary) {
  const std::string model = testing_support::write_tiny_hf_model(path("model"));
  const std::string data = testing_support::write_counting_dataset(path("data.jsonl"));
  {
    std::ofstream general(path("general.jsonl"));
    for (int i = 0; i < 12; ++i) {
      json ids = json::array();
      for (int t = 0; t < 12; ++t) ids.push_back((i + 39 * t) % 40);  // counting down
      general << json{{"input_ids", ids}}.dump() << "\n";
    }
  }
  const std::string args = "--model " + model + " --dataset " + data + " --general-eval " + path("general.jsonl") +
                           " --lr 0.01 --max-steps 12 --batch-size 4 --quiet";
  testing_support::RunResult r = train70b(args + " --output " + path("a"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json verdict;
  for (const json& j : read_metrics(dir_ / "a" / "metrics.jsonl"))
    if (j["event"] == "forgetting") verdict = j;
  ASSERT_TRUE(verdict.is_object());
  const double rise = verdict["perplexity_after"].get<double>() / verdict["perplexity_before"].get<double>() - 1;
  ASSERT_GT(rise, 0.1) << "the test needs a run that forgets: " << verdict.dump();
  EXPECT_TRUE(verdict["forgetting"].get<bool>());
  const std::regex row("\n  forgetting check +FORGETTING: the general-text perplexity rose [0-9.]+% \\(");
  EXPECT_TRUE(std::regex_search(r.out, row)) << r.out;
  EXPECT_NE(r.out.find("more than --forgetting-threshold 10%"), std::string::npos) << r.out;

  char threshold[32];
  std::snprintf(threshold, sizeof threshold, "%.6g", rise * 1.01);
  r = train70b(args + " --forgetting-threshold " + threshold + " --output " + path("b"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("  forgetting check    no forgetting: the general-text perplexity changed +"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("FORGETTING"), std::string::npos) << r.out;
}

TEST(ForgettingLine, ThresholdIsARelativePerplexityRise) {
  const train::EvalResult before{std::log(10.0), 0.5, 100};
  bool flagged = true;
  // Perplexity 10 -> 11 is a 10% rise: at the threshold, not above it.
  train::forgetting_line(before, {std::log(11.0) - 1e-12, 0.5, 100}, 0.1, &flagged);
  EXPECT_FALSE(flagged);
  const std::string line = train::forgetting_line(before, {std::log(11.5), 0.5, 100}, 0.1, &flagged);
  EXPECT_TRUE(flagged);
  EXPECT_EQ(line.rfind("FORGETTING: the general-text perplexity rose 15.0% (10.000 -> 11.500)", 0), 0u) << line;
  train::forgetting_line(before, {std::log(5.0), 0.5, 100}, 0, &flagged);  // it fell
  EXPECT_FALSE(flagged);
  train::forgetting_line(before, {std::nan(""), 0, 100}, 0.1, &flagged);  // diverged
  EXPECT_TRUE(flagged);
}

// Every flag of --help is a key of run_config.json, except those that say how one
// invocation starts or shows itself; and every key is a flag.
TEST_F(Train70bRuns, RunConfigHoldsEveryFlag) {
  const testing_support::RunResult help = train70b("--help");
  ASSERT_EQ(help.exit_code, 0);
  std::set<std::string> flags;
  const std::regex flag("--([a-z][a-z0-9-]+)");
  for (auto it = std::sregex_iterator(help.out.begin(), help.out.end(), flag); it != std::sregex_iterator(); ++it)
    flags.insert((*it)[1]);
  for (const char* invocation : {"help", "config", "resume", "quiet"}) EXPECT_EQ(flags.erase(invocation), 1u) << invocation;
  const std::vector<std::string> keys = train::run_config_keys();
  EXPECT_EQ(flags, std::set<std::string>(keys.begin(), keys.end()));
}

// A run repeated from its run_config.json writes a byte-identical adapter; a flag on the
// command line overrides the file, and the new run_config.json records the override.
TEST_F(Train70bRuns, RunConfigRepeatsTheRunAndFlagsOverrideIt) {
  const std::string model = testing_support::write_tiny_hf_model(path("model"));
  const std::string data = testing_support::write_counting_dataset(path("data.jsonl"));
  // Non-default values, floats that are not exact in binary among them (0.003, 0.1).
  testing_support::RunResult r =
      train70b("--model " + model + " --dataset " + data + " --output " + path("a") +
               " --lora-r 4 --lora-alpha 8 --lora-dropout 0.1 --lr 0.003 --schedule cosine --warmup-ratio 0.2"
               " --max-steps 6 --batch-size 3 --grad-accum 2 --seed 7 --eval-every 3 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string a_text = slurp(dir_ / "a" / "run_config.json");
  const json a = json::parse(a_text);
  // Floats as the shortest decimal that reads back to them, not 0.0030000000260770321.
  EXPECT_NE(a_text.find("\"lr\": 0.003,"), std::string::npos) << a_text;
  EXPECT_NE(a_text.find("\"lora-dropout\": 0.1,"), std::string::npos) << a_text;

  r = train70b("--config " + path("a/run_config.json") + " --output " + path("b"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(slurp(dir_ / "b" / "adapter_model.safetensors"), slurp(dir_ / "a" / "adapter_model.safetensors"));
  EXPECT_EQ(slurp(dir_ / "b" / "adapter_config.json"), slurp(dir_ / "a" / "adapter_config.json"));
  json b = json::parse(slurp(dir_ / "b" / "run_config.json"));
  EXPECT_EQ(b["output"], path("b"));
  b["output"] = a["output"];
  EXPECT_EQ(b, a);

  r = train70b("--config " + path("a/run_config.json") + " --output " + path("c") + " --seed 8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json c = json::parse(slurp(dir_ / "c" / "run_config.json"));
  EXPECT_EQ(c["seed"], 8);
  EXPECT_NE(slurp(dir_ / "c" / "adapter_model.safetensors"), slurp(dir_ / "a" / "adapter_model.safetensors"));
  c["seed"] = a["seed"];
  c["output"] = a["output"];
  c.erase("resolved");
  json a_flags = a;
  a_flags.erase("resolved");
  EXPECT_EQ(c, a_flags);
}

// A bad --config is one line naming the file and the key; nothing is written.
TEST_F(Train70bRuns, BadConfigIsOneLineNamingFileAndKey) {
  auto expect_refused = [&](const std::string& content, const std::string& needle) {
    std::ofstream(path("config.json")) << content;
    const testing_support::RunResult r = train70b("--config " + path("config.json") + " --output " + path("out"));
    EXPECT_EQ(r.exit_code, 1) << content;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("train70b: --config " + path("config.json") + ": ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << needle << "\n" << r.err;
    EXPECT_FALSE(fs::exists(dir_ / "out")) << content;
  };
  expect_refused(R"({"demo": true, "learning-rate": 0.1})", "key 'learning-rate': unknown key");
  expect_refused(R"({"demo": true, "lr": "fast"})", "key 'lr': expected a number, got \"fast\"");
  expect_refused(R"({"demo": true, "batch-size": 1.5})", "key 'batch-size': expected an integer, got 1.5");
  expect_refused(R"({"demo": true, "packing": 1})", "key 'packing': expected true or false");
  expect_refused(R"([1, 2])", "expected a JSON object");
  expect_refused(R"({"demo": tru)", "not valid JSON");
  // Values the file gives are checked as the flags are.
  expect_refused(R"({"demo": true, "lr": 5})", "--lr must be in (0, 1), got 5");
  const testing_support::RunResult r = train70b("--config " + path("nope.json"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--config " + path("nope.json") + ": cannot open"), std::string::npos) << r.err;
}

// `train70b plot RUN_DIR` while the run writes: the live metrics (in the run's staging
// directory) are drawn into RUN_DIR/plots, where the user looks.
TEST_F(Train70bRuns, PlotDrawsARunInProgressIntoTheRunDirectory) {
  const fs::path out = dir_ / "live";
  const int pid = testing_support::start_command(std::string(TRAIN70B_PATH) + " --demo --log-every 1 --output " +
                                                     out.string(),
                                                 path("live.log"));
  size_t train_lines = 0;
  for (int i = 0; i < 1200 && train_lines < 4; ++i) {  // up to 60 s on a loaded machine
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const fs::path live = train::live_metrics_path(out);
    if (live.empty()) continue;
    const std::string text = slurp(live);
    train_lines = 0;
    for (size_t at = text.find("\"event\":\"train\""); at != std::string::npos; at = text.find("\"event\":\"train\"", at + 1))
      ++train_lines;
  }
  ASSERT_GE(train_lines, 4u) << slurp(path("live.log"));
  const testing_support::RunResult r = train70b("plot " + out.string());
  ::kill(pid, SIGTERM);  // the run saves a checkpoint and stops
  testing_support::wait_command(pid);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find((out / "plots" / "loss.svg").string()), std::string::npos) << r.out;
  EXPECT_GE(chart_points(slurp(out / "plots" / "loss.svg"))["train loss"].size(), 4u);
  EXPECT_EQ(chart_points(slurp(out / "plots" / "loss.svg"))["held-out loss"].size(), 1u);  // before training
  EXPECT_TRUE(fs::exists(out / train::kOutputMarker));  // the output directory stays the run's
}

}  // namespace
