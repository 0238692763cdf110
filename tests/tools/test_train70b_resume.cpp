// Checkpoints and exact resume (tools/train/checkpoint.h, run_output.h, stop_signal.h): a run
// stopped by SIGTERM or killed with SIGKILL at any point, in the middle of a save included,
// then resumed, ends with the same adapter bytes and the same training metrics as a run
// that was never stopped, for every --optim; --save-total-limit keeps the newest K; a damaged
// checkpoint is refused with one line naming its file; the output directory holds one run's
// files or another's, never a mix, and what killed runs left behind is cleaned at start.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "engine/io/safetensors.h"
#include "tests/support/process.h"
#include "tests/support/tiny_run.h"
#include "tools/train/run_output.h"

namespace fs = std::filesystem;
using nlohmann::json;
using testing_support::RunResult;

namespace {

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// What a resumed run must repeat bit for bit, step by step: the train lines of
// metrics.jsonl without timings and memory.
std::vector<json> train_lines(const fs::path& metrics) {
  std::vector<json> lines;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line);
    if (j.at("event") == "train")
      lines.push_back({{"step", j["step"]}, {"loss", j["loss"]}, {"lr", j["lr"]}, {"grad_norm", j["grad_norm"]},
                       {"skipped", j["skipped"]}});
  }
  return lines;
}

int count_events(const fs::path& metrics, const std::string& event) {
  int n = 0;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) n += json::parse(line).at("event") == event;
  return n;
}

std::vector<std::string> checkpoint_names(const fs::path& output) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(output / "checkpoints", ec)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

// Exit status of a finished child, -N when signal N ended it, or nullopt while it runs.
std::optional<int> poll_exit(int pid) {
  int status = 0;
  if (::waitpid(pid, &status, WNOHANG) != pid) return std::nullopt;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

class Train70bResume : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("train70b_resume_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // Intermediate 256 and r 16: the MLP's LoRA factors have 4096 values, enough for
    // paged_adamw_8bit to keep 8-bit states for them (smaller tensors stay fp32).
    model_ = testing_support::write_tiny_hf_model((dir_ / "model").string(), 256);
    data_ = testing_support::write_counting_dataset((dir_ / "data.jsonl").string());
  }
  void TearDown() override {
    if (std::getenv("TRAIN70B_TEST_KEEP") == nullptr) fs::remove_all(dir_);  // kept for a look when set
  }

  // 108 training examples, 8 per step: 20 steps cross an epoch boundary; a cosine schedule
  // with warmup, dropout and gradient accumulation, so that the data order, the schedule
  // position, the dropout masks and the optimizer state all have to be restored.
  std::string command(const fs::path& output, const std::string& extra) const {
    return std::string(TRAIN70B_PATH) + " --model " + model_ + " --dataset " + data_ + " --output " +
           output.string() +
           " --max-steps 20 --batch-size 4 --grad-accum 2 --lora-r 16 --lr 2e-3 --schedule cosine"
           " --warmup-ratio 0.1 --log-every 1000 --quiet " +
           extra;
  }
  RunResult run(const fs::path& output, const std::string& extra) const {
    return testing_support::run_command(command(output, extra));
  }
  int start(const fs::path& output, const std::string& extra, const std::string& env = "") const {
    return testing_support::start_command(command(output, extra), (dir_ / "log.txt").string(), env);
  }
  std::string log() const { return read_bytes(dir_ / "log.txt"); }

  // Polls every millisecond until `ready` holds (true) or the run ends (false, *exit set).
  static bool wait_until(int pid, const std::function<bool()>& ready, std::optional<int>* exit) {
    for (;;) {
      if (ready()) return true;
      if ((*exit = poll_exit(pid))) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  // " --resume latest" when a killed run left a checkpoint: in OUTPUT/checkpoints, or in a
  // staging directory from which the next start moves them back (run_output.h).
  static std::string resume_flag(const fs::path& output) {
    if (!checkpoint_names(output).empty()) return " --resume latest";
    for (const auto& e : fs::directory_iterator(output.parent_path()))
      if (e.path().filename().string().find(".train70b-staging.") != std::string::npos &&
          !checkpoint_names(e.path()).empty())
        return " --resume latest";
    return "";
  }

  fs::path dir_;
  std::string model_, data_;
};

// A reference run, never stopped.
struct Reference {
  std::string adapter, config;
  std::vector<json> train;
  double seconds = 0;
};

Reference reference(const fs::path& output) {
  return {read_bytes(output / "adapter_model.safetensors"), read_bytes(output / "adapter_config.json"),
          train_lines(output / "metrics.jsonl")};
}

void expect_same_run(const fs::path& output, const Reference& ref) {
  EXPECT_TRUE(read_bytes(output / "adapter_model.safetensors") == ref.adapter)
      << output << ": the resumed run's adapter differs from the uninterrupted run's";
  EXPECT_EQ(read_bytes(output / "adapter_config.json"), ref.config);
  const std::vector<json> train = train_lines(output / "metrics.jsonl");
  ASSERT_EQ(train.size(), ref.train.size());
  for (size_t i = 0; i < train.size(); ++i) EXPECT_EQ(train[i], ref.train[i]) << "train line " << i;
  EXPECT_EQ(count_events(output / "metrics.jsonl", "eval"), 2);  // before and after training, once each
  // Nothing of a stopped or killed run is left beside or inside the output.
  for (const auto& e : fs::directory_iterator(output.parent_path()))
    EXPECT_EQ(e.path().filename().string().find(".train70b-"), std::string::npos) << e.path();
  for (const std::string& name : checkpoint_names(output)) EXPECT_EQ(name.rfind("checkpoint-", 0), 0u) << name;
}

// (a) SIGTERM: the run saves a checkpoint after the step it is in and exits non-zero with
// one line; --resume latest continues it to the same bytes and metrics.
TEST_F(Train70bResume, StoppedBySigtermThenResumedIsBitwiseTheSame) {
  ASSERT_EQ(run(dir_ / "ref", "--save-every 0").exit_code, 0);
  const Reference ref = reference(dir_ / "ref");
  ASSERT_EQ(ref.train.size(), 20u);

  const fs::path out = dir_ / "out";
  const int pid = start(out, "--save-every 0");
  const fs::path live = out.parent_path() / (".out.train70b-staging." + std::to_string(pid)) / "metrics.jsonl.partial";
  std::optional<int> exit;
  ASSERT_TRUE(wait_until(pid, [&] { return train_lines(live).size() >= 5; }, &exit)) << *exit << log();
  ::kill(pid, SIGTERM);
  EXPECT_EQ(testing_support::wait_command(pid), 1) << log();
  const std::string message = log();
  EXPECT_EQ(std::count(message.begin(), message.end(), '\n'), 1) << message;
  EXPECT_NE(message.find("stopped by SIGTERM after step"), std::string::npos) << message;
  EXPECT_NE(message.find("continue with --resume latest"), std::string::npos) << message;
  ASSERT_EQ(checkpoint_names(out).size(), 1u);
  EXPECT_NE(message.find((out / "checkpoints" / checkpoint_names(out)[0]).string()), std::string::npos);
  EXPECT_FALSE(fs::exists(out / "adapter_model.safetensors"));  // the output appears when the run ends

  // Options that do not shape the trajectory may change on resume (--max-line-size here).
  const RunResult r = run(out, "--save-every 0 --resume latest --max-line-size 1MiB");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_run(out, ref);
  EXPECT_EQ(count_events(out / "metrics.jsonl", "resumed"), 1);
}

// (b, c, d) kill -9: once in the middle of a save (a test hook holds the save after step 6
// half-written: adapter done, optimizer state not yet), then at random moments (a fixed
// seed of delays), resuming each time; the final adapter and metrics equal an uninterrupted
// run's, for every optimizer's state, and --save-total-limit 2 leaves the newest two.
struct KillCase {
  const char* optim;
  int random_kills;
};

class Train70bKill : public Train70bResume, public testing::WithParamInterface<KillCase> {};

TEST_P(Train70bKill, KilledAnywhereThenResumedIsBitwiseTheSame) {
  const std::string flags = std::string("--optim ") + GetParam().optim + " --save-every 3 --save-total-limit 2";
  const auto t0 = std::chrono::steady_clock::now();
  const RunResult first = run(dir_ / "ref", flags);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const Reference ref = reference(dir_ / "ref");

  const fs::path out = dir_ / "out";
  const int pid = start(out, flags, "TRAIN70B_TEST_SAVE_PAUSE=6:60000");
  const fs::path half = out / "checkpoints" / (".tmp-checkpoint." + std::to_string(pid));
  std::optional<int> exit;
  // Every save uses that temporary name: only once checkpoint-3 is in place is it step 6's.
  ASSERT_TRUE(wait_until(
      pid,
      [&] {
        return fs::exists(out / "checkpoints" / "checkpoint-3") && fs::exists(half / "adapter_model.safetensors");
      },
      &exit))
      << *exit << log();
  ::kill(pid, SIGKILL);
  ASSERT_EQ(testing_support::wait_command(pid), -SIGKILL);
  EXPECT_EQ(checkpoint_names(out), (std::vector<std::string>{".tmp-checkpoint." + std::to_string(pid),
                                                             "checkpoint-3"}));

  std::mt19937 rng(20261201);
  std::uniform_real_distribution<double> delay(0.05 * seconds, 0.7 * seconds);
  int landed = 0;
  bool finished = false;
  for (int i = 0; i < GetParam().random_kills && !finished; ++i) {
    const int p = start(out, flags + resume_flag(out));
    std::this_thread::sleep_for(std::chrono::duration<double>(delay(rng)));
    ::kill(p, SIGKILL);
    const int status = testing_support::wait_command(p);
    ASSERT_TRUE(status == 0 || status == -SIGKILL) << status << ": " << log();
    finished = status == 0;  // it ended before the kill
    landed += !finished;
  }
  RecordProperty("random_kills_landed", landed);
  if (!finished) {
    const RunResult r = run(out, flags + resume_flag(out));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  expect_same_run(out, ref);
  EXPECT_EQ(checkpoint_names(out), (std::vector<std::string>{"checkpoint-15", "checkpoint-18"}));
  // The optimizer's state is in the checkpoint: 8-bit moments as U8 for paged_adamw_8bit.
  const engine::io::SafetensorsFile state((out / "checkpoints" / "checkpoint-18" / "optimizer.safetensors").string());
  bool eight_bit = false;
  for (const std::string& name : state.names()) eight_bit |= state.info(name).dtype_name == "U8";
  EXPECT_EQ(eight_bit, std::string(GetParam().optim) == "paged_adamw_8bit");
}

INSTANTIATE_TEST_SUITE_P(Optimizers, Train70bKill,
                         testing::Values(KillCase{"adamw", 4}, KillCase{"paged_adamw_32bit", 1},
                                         KillCase{"paged_adamw_8bit", 1}),
                         [](const testing::TestParamInfo<KillCase>& kill_case) { return std::string(kill_case.param.optim); });

}  // namespace
