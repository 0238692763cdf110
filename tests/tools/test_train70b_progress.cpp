// train70b's progress output (tools/train/progress.h): the live line fits the terminal and
// drops fields by importance, the plain lines come every --log-every steps, --quiet prints
// only the summary table, which names everything the run wrote.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "tests/support/process.h"
#include "tests/support/tiny_run.h"
#include "tools/train/progress.h"

namespace fs = std::filesystem;

namespace {

train::StepStatus sample_status() {
  train::StepStatus s;
  s.step = 10;
  s.total_steps = 100;
  s.epoch = 0.25;
  s.total_epochs = 2.5;
  s.loss = 2.5;
  s.loss_ema = 2.75;
  s.lr = 1e-4;
  s.grad_norm = 0.5;
  s.tokens_per_second = 1234;
  s.elapsed_seconds = 20;  // 2 s per step: 90 steps left take 3 minutes
  s.memory.gpu = true;
  s.memory.device_in_use = size_t{30} << 30;
  s.memory.device_peak = size_t{35} << 30;
  s.memory.host_rss = size_t{3} << 30;
  s.memory.host_peak = size_t{4} << 30;
  return s;
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

}  // namespace

TEST(Progress, LiveLineFitsTheTerminalAndKeepsTheMostImportantFields) {
  const train::StepStatus s = sample_status();
  const std::string wide = train::format_live_line(s, 250);
  for (const char* field : {"step 10/100", "ema loss 2.7500", "ETA 3m00s", "epoch 0.25/2.5", "lr 1.00e-04",
                            "1234 tok/s", "gpu 30.0 GiB (peak 35.0 GiB)", "host 3.0 GiB", "grad-norm 0.5"})
    EXPECT_NE(wide.find(field), std::string::npos) << field << "\n" << wide;
  // Narrower terminals drop fields from the end; the line never reaches the last column.
  size_t previous = wide.size();
  for (int width : {120, 80, 60, 40, 24, 12, 8}) {
    const std::string line = train::format_live_line(s, width);
    EXPECT_LT(line.size(), static_cast<size_t>(width)) << width << ": " << line;
    EXPECT_LE(line.size(), previous) << width;
    EXPECT_EQ(line.rfind("step 10/100", 0) == 0, width >= 12) << width << ": " << line;  // cut at 8
    EXPECT_EQ(line.find('\r'), std::string::npos);
    previous = line.size();
  }
  EXPECT_NE(train::format_live_line(s, 40).find("ETA"), std::string::npos);
  EXPECT_EQ(train::format_live_line(s, 40).find("tok/s"), std::string::npos);
  // On the CPU the memory field is the process's resident set.
  train::StepStatus cpu = s;
  cpu.memory.gpu = false;
  EXPECT_NE(train::format_live_line(cpu, 250).find("mem 3.0 GiB (peak 4.0 GiB)"), std::string::npos);
  EXPECT_EQ(train::format_live_line(cpu, 250).find("host"), std::string::npos);
}

TEST(Progress, LossEmaIsBiasCorrectedAndSkipsNonFinite) {
  train::LossEma ema(0.9);
  EXPECT_TRUE(std::isnan(ema.value()));
  ema.add(4);
  EXPECT_DOUBLE_EQ(ema.value(), 4);  // bias correction: the first value is its own average
  ema.add(std::nan(""));
  ema.add(INFINITY);
  ema.add(2);
  // (0.1 * 0.9 * 4 + 0.1 * 2) / (1 - 0.81)
  EXPECT_NEAR(ema.value(), (0.36 + 0.2) / 0.19, 1e-12);
}

TEST(Progress, DurationsAndModes) {
  EXPECT_EQ(train::format_duration(42.4), "42s");
  EXPECT_EQ(train::format_duration(187), "3m07s");
  EXPECT_EQ(train::format_duration(3720), "1h02m");
  EXPECT_EQ(train::format_duration(-1), "?");
  EXPECT_EQ(train::format_duration(NAN), "?");

  train::StepStatus s = sample_status();
  s.total_steps = 10;
  auto run = [&](train::ProgressMode mode) {
    std::ostringstream out;
    train::Progress p(out, mode, 4);
    for (int64_t step = 1; step <= 10; ++step) {
      s.step = step;
      p.step(s);
      if (step == 5) p.print("held-out at step 5");
    }
    p.finish();
    return out.str();
  };
  const std::string lines = run(train::ProgressMode::Lines);
  EXPECT_EQ(count(lines, "/10  epoch"), 4u) << lines;  // steps 1, 4, 8 and the last
  for (const char* step : {"step     1/10", "step     4/10", "step     8/10", "step    10/10"})
    EXPECT_NE(lines.find(step), std::string::npos) << step << "\n" << lines;
  EXPECT_EQ(lines.find('\r'), std::string::npos);
  EXPECT_NE(lines.find("held-out at step 5\n"), std::string::npos);

  EXPECT_EQ(run(train::ProgressMode::Quiet), "");

  const std::string live = run(train::ProgressMode::Live);
  EXPECT_EQ(count(live, "\r"), 10u + 1) << live;  // each step, and clearing before the message
  EXPECT_EQ(count(live, "\x1b[K"), 10u + 1);
  EXPECT_NE(live.find("\r\x1b[Kheld-out at step 5\n"), std::string::npos) << live;
  EXPECT_EQ(live.back(), '\n');
}

TEST(Progress, SummaryTableKeepsTheBestEvaluation) {
  train::RunReport r;
  r.wall_seconds = 65;
  r.steps = r.total_steps = 20;
  r.tokens = 4800;
  train::note_eval(r, "before training", 0, 3.0, 0.1);
  train::note_eval(r, "step 10", 10, 1.0, 0.5);  // --eval-every
  train::note_eval(r, "after training", 20, 1.5, 0.4);
  r.peak_memory.host_peak = size_t{3} << 30;
  r.adapter_dir = "out";
  r.metrics_file = "out/metrics.jsonl";
  const std::string t = train::format_summary_table(r);
  for (const char* row : {"wall time           1m05s", "steps               20 of 20", "tokens              4800",
                          "best eval           loss 1.0000 (perplexity 2.718, accuracy 50.0%) at step 10, step 10",
                          "final eval          loss 1.5000", "peak host memory    3.00 GiB",
                          "adapter             out\n", "metrics             out/metrics.jsonl"})
    EXPECT_NE(t.find(row), std::string::npos) << row << "\n" << t;
  EXPECT_EQ(t.find("plots"), std::string::npos);  // not written: no row
  EXPECT_EQ(t.find("device"), std::string::npos);  // a CPU run
}

class Train70bProgress : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("train70b_progress_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    args_ = std::string(TRAIN70B_PATH) + " --model " +
            testing_support::write_tiny_hf_model((dir_ / "model").string()) + " --dataset " +
            testing_support::write_counting_dataset((dir_ / "data.jsonl").string()) +
            " --batch-size 4 --max-steps 7 --log-every 3 --lr 3e-3 --output " + (dir_ / "out").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  std::string args_;
};

TEST_F(Train70bProgress, PlainLinesWhenNotATerminalThenTheSummary) {
  const testing_support::RunResult r = testing_support::run_command(args_);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out.find('\r'), std::string::npos);
  EXPECT_EQ(count(r.out, "\nstep "), 4u) << r.out;  // steps 1, 3, 6 and 7
  for (const char* step : {"step     1/7", "step     3/7", "step     6/7", "step     7/7"})
    EXPECT_NE(r.out.find(step), std::string::npos) << step << "\n" << r.out;
  EXPECT_NE(r.out.find("(ema "), std::string::npos);
  EXPECT_NE(r.out.find("mem "), std::string::npos);  // the CPU: resident memory
  const size_t summary = r.out.find("\nsummary\n");
  ASSERT_NE(summary, std::string::npos) << r.out;
  const std::string table = r.out.substr(summary);
  for (const char* row : {"steps               7 of 7", "best eval", "final eval", "peak host memory",
                          "adapter", "metrics", "plots"})
    EXPECT_NE(table.find(row), std::string::npos) << row << "\n" << table;
  EXPECT_NE(table.find((dir_ / "out" / "plots").string()), std::string::npos) << table;
  EXPECT_TRUE(fs::exists(dir_ / "out" / "plots" / "loss.svg"));
}

TEST_F(Train70bProgress, QuietPrintsOnlyTheSummary) {
  const testing_support::RunResult r = testing_support::run_command(args_ + " --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out.rfind("summary\n", 0), 0u) << r.out;
  EXPECT_EQ(r.out.find("/7  epoch"), std::string::npos) << r.out;  // no step lines
  EXPECT_EQ(r.out.find("held-out"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("best eval"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(dir_ / "out" / "adapter_model.safetensors"));
}
