// The dry run is exact (label gpu): a training run executed on the device and the dry run
// of the same flags (train70b-dry, docs/memory.md "Dry run") report the same caching
// allocator peak, byte for byte, and the same live set by owner at that peak.
// - In the SIMT emulation build the executed run is emulated on the CPU as an A100 (sm_80,
//   and SIMT_SMS=108, since SM counts size some workspaces); the dry binary comes from the
//   CUDA build (-DENGINE_DRY_RUN_BINARY=..., which tools/test.sh passes).
// - In the CUDA build on a GPU, the executed run is the real one, on whatever A100 or H100
//   the machine has, against the dry run of that GPU's --gpu name.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/gpu_spec.h"
#include "engine/backend.h"
#include "tests/support/gpu.h"
#include "tests/support/process.h"
#include "tools/train/trainer.h"

namespace fs = std::filesystem;

namespace {

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::map<std::string, int64_t> owners(const nlohmann::json& memory) {
  std::map<std::string, int64_t> m;
  for (const auto& o : memory["owners_at_peak"]) m[o["owner"]] = o["bytes"];
  return m;
}

// The --gpu name whose properties are this device's (memory size aside), or "".
std::string matching_gpu_name(const engine::GpuSpec& device) {
  for (const char* name : {"a100-80gb", "h100-80gb"}) {
    const engine::GpuSpec s = engine::parse_gpu_spec(name);
    if (s.major == device.major && s.minor == device.minor && s.sms == device.sms &&
        s.shared_per_block_optin == device.shared_per_block_optin)
      return name;
  }
  return "";
}

#ifdef DRY_RUN_BINARY
// Executes `flags` on the device (train70b's run_training in this process) and as a dry run
// of the matching --gpu, in `dir`; compares the two memory.json files.
void expect_dry_run_exact(const fs::path& dir, const std::string& gpu, const std::string& flags) {
  std::vector<std::string> args = {"train70b", "--device", "cuda", "--output", (dir / "run").string()};
  std::istringstream split(flags);
  for (std::string a; split >> a;) args.push_back(a);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  int exit_code = 0;
  const auto options = train::parse_options(static_cast<int>(argv.size()), argv.data(), &exit_code);
  ASSERT_TRUE(options.has_value());
  std::ostringstream log;
  train::run_training(*options, log);
  const testing_support::RunResult dry = testing_support::run_command(
      std::string(DRY_RUN_BINARY) + " --dry-run --gpu " + gpu + " --output " + (dir / "dry").string() +
      " " + flags);
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  const nlohmann::json run = read_json(dir / "run" / "memory.json");
  const nlohmann::json dry_run = read_json(dir / "dry" / "memory.json");
  EXPECT_FALSE(run["dry_run"].get<bool>());
  EXPECT_TRUE(dry_run["dry_run"].get<bool>());
  EXPECT_EQ(run["peak_device_bytes"], dry_run["peak_device_bytes"]) << log.str() << dry.out;
  EXPECT_EQ(run["peak_device_block_bytes"], dry_run["peak_device_block_bytes"]);
  EXPECT_EQ(owners(run), owners(dry_run));
}

// The device and its --gpu name, or a skip reason.
std::string exact_test_gpu(std::string* skip) {
  ::setenv("SIMT_SMS", "108", 0);  // the emulated GPU as an A100 (read by the SIMT runtime only)
  std::string no_gpu;
  if (!engine::cuda_available(&no_gpu)) {
    *skip = "no usable GPU: " + no_gpu;
    return "";
  }
  const std::string gpu = matching_gpu_name(engine::cuda_device_spec());
  if (gpu.empty()) *skip = "no --gpu name matches this device's properties";
  return gpu;
}

fs::path fresh_dir(const char* name) {
  const fs::path dir = fs::temp_directory_path() / (std::string(name) + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}
#endif

constexpr const char* kNoDryBinary =
    "no train70b-dry to compare with: configure this SIMT build with "
    "-DENGINE_DRY_RUN_BINARY=<CUDA build>/tools/train70b-dry (tools/test.sh does)";

TEST(Train70bDryRunCuda, PeakEqualsTheExecutedRunsByteForByte) {
#ifndef DRY_RUN_BINARY
  GTEST_SKIP() << kNoDryBinary;
#else
  std::string skip;
  const std::string gpu = exact_test_gpu(&skip);
  if (gpu.empty()) GTEST_SKIP() << skip;
  const fs::path dir = fresh_dir("train70b_dry_exact_");
  // Full-length pre-tokenized examples: both runs see exactly the same batches.
  {
    std::ofstream data(dir / "data.jsonl");
    for (int e = 0; e < 5; ++e) {
      nlohmann::json ids = nlohmann::json::array();
      for (int t = 0; t < 64; ++t) ids.push_back((e * 31 + t * 7) % 250 + 1);
      data << nlohmann::json{{"input_ids", ids}}.dump() << "\n";
    }
  }
  expect_dry_run_exact(dir, gpu, "--model tiny --dataset " + (dir / "data.jsonl").string() +
                                     " --batch-size 2 --max-seq-len 64 --max-steps 2 --max-gpu-mem 8GiB");
  fs::remove_all(dir);
#endif
}

// DPO (issue 14): chosen and rejected rows, the reference pass each step, the held-out pairs.
TEST(Train70bDryRunCuda, DpoPeakEqualsTheExecutedRunsByteForByte) {
#ifndef DRY_RUN_BINARY
  GTEST_SKIP() << kNoDryBinary;
#else
  std::string skip;
  const std::string gpu = exact_test_gpu(&skip);
  if (gpu.empty()) GTEST_SKIP() << skip;
  const fs::path dir = fresh_dir("train70b_dry_exact_dpo_");
  {
    std::ofstream data(dir / "prefs.jsonl");
    for (int e = 0; e < 6; ++e)
      data << nlohmann::json{{"prompt", "question " + std::to_string(e) + ": which is right?"},
                             {"chosen", " the first answer, at some length " + std::to_string(e)},
                             {"rejected", " the second, shorter " + std::to_string(e * 7)}}.dump()
           << "\n";
  }
  expect_dry_run_exact(dir, gpu, "--method dpo --model tiny --dataset " + (dir / "prefs.jsonl").string() +
                                     " --batch-size 2 --max-seq-len 64 --max-steps 2 --max-gpu-mem 8GiB "
                                     "--precompute-ref false --eval-fraction 0.34");
  fs::remove_all(dir);
#endif
}

}  // namespace
