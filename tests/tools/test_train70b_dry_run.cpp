// train70b --dry-run (docs/memory.md, "Dry run") on this machine, GPU or not: in a CUDA
// build it runs the tiny preset's CUDA path on the dry runtime and writes memory.json,
// whose live set by owner sums to the peak; a --gpu too small for the run gives fits
// false and exit code 3; in a build without CUDA, one line says the dry run needs it.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/support/process.h"

namespace fs = std::filesystem;

namespace {

using testing_support::RunResult;

constexpr const char* kTinyRun = "--dry-run --model tiny --batch-size 2 --max-seq-len 64";

class Train70bDryRun : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("train70b_dry_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static bool dry_build() { return fs::exists(fs::path(TRAIN70B_PATH).parent_path() / "train70b-dry"); }
  RunResult run(const std::string& args) const {
    return testing_support::run_command(std::string(TRAIN70B_PATH) + " " + args + " --output " +
                                        (dir_ / "out").string());
  }
  nlohmann::json memory_json() const {
    std::ifstream in(dir_ / "out" / "memory.json");
    return nlohmann::json::parse(in);
  }

  fs::path dir_;
};

TEST_F(Train70bDryRun, WritesThePeakAndItsOwners) {
  if (!dry_build()) GTEST_SKIP() << "a build without CUDA has no train70b-dry";
  const RunResult r = run(kTinyRun);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("dry run on a100-80gb"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("placeholders"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "out" / "adapter_model.safetensors"));  // never computed
  const nlohmann::json m = memory_json();
  for (const char* key : {"peak_device_bytes", "peak_device_block_bytes", "planned_device_bytes",
                          "peak_host_pinned_bytes", "max_gpu_mem_bytes", "fits", "flags",
                          "owners_at_peak", "categories_at_peak"})
    EXPECT_TRUE(m.contains(key)) << key;
  EXPECT_TRUE(m["dry_run"].get<bool>());
  EXPECT_TRUE(m["fits"].get<bool>());
  EXPECT_EQ(m["gpu"], "a100-80gb");
  EXPECT_EQ(m["flags"]["max-seq-len"], 64);  // the flags by name, as run_config.json
  const int64_t peak = m["peak_device_bytes"];
  EXPECT_GT(peak, int64_t{32} << 20);  // at least cuBLASLt's workspace
  EXPECT_GE(m["peak_device_block_bytes"].get<int64_t>(), peak);
  int64_t owners = 0, categories = 0;
  for (const auto& o : m["owners_at_peak"]) owners += o["bytes"].get<int64_t>();
  for (const auto& [name, bytes] : m["categories_at_peak"].items()) categories += bytes.get<int64_t>();
  EXPECT_EQ(owners, peak);
  EXPECT_EQ(categories, peak);
  for (const char* owner : {"weights", "lora", "gradients", "optimizer", "checkpoints",
                            "activations", "workspace"})
    EXPECT_GT(m["categories_at_peak"].value(owner, int64_t{0}), 0) << owner;
  // Each training step's metrics say which values are placeholders.
  std::ifstream metrics(dir_ / "out" / "metrics.jsonl");
  int placeholder_lines = 0;
  for (std::string line; std::getline(metrics, line);)
    placeholder_lines += nlohmann::json::parse(line).contains("placeholders");
  EXPECT_EQ(placeholder_lines, 2);  // the dry run's default: 2 steps
}

TEST_F(Train70bDryRun, AGpuTooSmallDoesNotFit) {
  if (!dry_build()) GTEST_SKIP() << "a build without CUDA has no train70b-dry";
  const RunResult r = run(std::string(kTinyRun) + " --gpu 2000000");
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("does not fit"), std::string::npos) << r.err;
  const nlohmann::json m = memory_json();
  EXPECT_FALSE(m["fits"].get<bool>());
  EXPECT_EQ(m["gpu"], "a100 with 2000000");
}

TEST_F(Train70bDryRun, BadGpuNamesTheFlag) {
  if (!dry_build()) GTEST_SKIP() << "a build without CUDA has no train70b-dry";
  const RunResult r = run(std::string(kTinyRun) + " --gpu a100");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("train70b: --gpu: 'a100' is not", 0), 0u) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "out"));
  const RunResult no_dry = run("--model tiny --demo --gpu h200");
  EXPECT_NE(no_dry.exit_code, 0);
  EXPECT_NE(no_dry.err.find("--gpu applies to --dry-run only"), std::string::npos) << no_dry.err;
}

TEST_F(Train70bDryRun, ABuildWithoutCudaSaysSo) {
  if (dry_build()) GTEST_SKIP() << "this build has CUDA: the dry run runs (tests above)";
  const RunResult r = run(kTinyRun);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("train70b: --dry-run needs the CUDA build of train70b", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

}  // namespace
