// The memory planner (tools/train/memory_plan.h) against the dry run (train70b --dry-run,
// docs/memory.md): the planned device peak is within 3% of the peak the dry run measures
// on the CUDA path, for the tiny preset, Llama-3-8B and Llama-3-70B from 2,048 to 131,072
// tokens; the 70B targets of issue 11 hold; a plan that does not fit is refused with the
// largest items and a change that was planned to fit.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/error.h"
#include "engine/gpu_spec.h"
#include "models/llama_config.h"
#include "tests/support/process.h"
#include "tools/train/memory_plan.h"

namespace fs = std::filesystem;

namespace {

bool dry_build() { return fs::exists(fs::path(TRAIN70B_PATH).parent_path() / "train70b-dry"); }

// memory.json of a dry run with `flags` (one training step, as the planner plans it).
nlohmann::json dry_run(const std::string& flags) {
  const fs::path dir = fs::temp_directory_path() / ("train70b_plan_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const testing_support::RunResult r = testing_support::run_command(
      std::string(TRAIN70B_PATH) + " --dry-run --max-steps 1 " + flags + " --output " + dir.string());
  EXPECT_EQ(r.exit_code, 0) << flags << "\n" << r.err;
  std::ifstream in(dir / "memory.json");
  nlohmann::json m = in ? nlohmann::json::parse(in) : nlohmann::json();
  fs::remove_all(dir);
  return m;
}

struct PlannedRun {
  const char* flags;
  double max_peak_gb = 0;  // a target of issue 11 (0: none)
};

constexpr double kPlannerTolerance = 0.03;  // issue 11: the planner within 3% of the dry run

}  // namespace

TEST(MemoryPlan, WithinThreePercentOfTheDryRunAndThe70bTargetsHold) {
  if (!dry_build()) GTEST_SKIP() << "a build without CUDA has no train70b-dry to compare with";
  const PlannedRun runs[] = {
      {"--model tiny --batch-size 2 --max-seq-len 64"},
      {"--model tiny --batch-size 2 --max-seq-len 64 --optim paged_adamw_8bit --offload-checkpoints on "
       "--embedding-on-host on"},
      {"--model synthetic:llama3-8b --batch-size 1 --max-seq-len 2048"},
      {"--model synthetic:llama3-8b --batch-size 1 --max-seq-len 2048 --optim paged_adamw_8bit "
       "--embedding-on-host on --eval-fraction 0"},
      {"--model synthetic:llama3-8b --batch-size 1 --max-seq-len 32768 --offload-checkpoints on "
       "--eval-fraction 0"},
      // Issue 11's targets on an 80 GB A100: <= 44 GB at 4,096 tokens; 131,072 tokens fit.
      {"--model synthetic:llama3-70b --batch-size 1 --max-seq-len 4096 --offload-checkpoints on "
       "--embedding-on-host on --optim paged_adamw_32bit --eval-fraction 0",
       44e9},
      {"--model synthetic:llama3-70b --batch-size 1 --max-seq-len 131072 --offload-checkpoints on "
       "--embedding-on-host on --optim paged_adamw_32bit --eval-fraction 0",
       80e9},
      // DPO (issue 14): two rows per pair, the reference pass each step or precomputed.
      {"--method dpo --model tiny --batch-size 2 --max-seq-len 64 --precompute-ref false"},
      {"--method dpo --model tiny --batch-size 2 --max-seq-len 64 --optim paged_adamw_8bit"},
      {"--method dpo --model synthetic:llama3-8b --batch-size 1 --max-seq-len 2048 --precompute-ref false"},
      {"--method dpo --model synthetic:llama3-70b --batch-size 1 --max-seq-len 4096 --offload-checkpoints on "
       "--embedding-on-host on --optim paged_adamw_32bit --precompute-ref false"},
  };
  for (const PlannedRun& run : runs) {
    SCOPED_TRACE(run.flags);
    const nlohmann::json m = dry_run(run.flags);
    ASSERT_TRUE(m.contains("planned_device_bytes") && m["planned_device_bytes"].is_number()) << m.dump();
    const double planned = m["planned_device_bytes"].get<double>();
    const double peak = m["peak_device_bytes"].get<double>();
    EXPECT_LE(std::fabs(planned - peak), kPlannerTolerance * peak) << "planned " << planned << ", dry run " << peak;
    if (run.max_peak_gb > 0) {
      EXPECT_LE(m["peak_device_block_bytes"].get<double>(), run.max_peak_gb) << "device peak over the target";
      EXPECT_TRUE(m["fits"].get<bool>());
    }
    std::printf("[ plan ] %s: planned %.0f, dry run %.0f bytes (%+.3f%%)\n", run.flags, planned, peak,
                100 * (planned - peak) / peak);
  }
}

TEST(MemoryPlan, ARunThatDoesNotFitIsRefusedWithAPlannedAlternative) {
  const models::LlamaConfig config = models::preset("llama3-70b");
  train::TrainOptions o;
  o.model = "synthetic:llama3-70b";
  o.batch_size = 1;
  o.max_seq_len = 131072;
  o.offload_checkpoints = "off";  // 80 layers x 131,072 x 8,192 x 2 bytes of checkpoints: 160 GiB
  o.max_gpu_mem = "80GiB";
  const engine::GpuSpec a100 = engine::parse_gpu_spec("a100-80gb");
  std::ostringstream log;
  try {
    train::resolve_auto_memory_options(config, o, a100, log);
    FAIL() << "160 GiB of checkpoints cannot fit in 80 GiB";
  } catch (const engine::InputError& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_EQ(message.rfind("--max-gpu-mem 80.0 GiB: the memory plan needs", 0), 0u) << message;
    EXPECT_NE(message.find("(largest: checkpoints"), std::string::npos) << message;
    // The advice names a sequence length that fits; planning it must say it fits.
    const size_t at = message.find("fits: --max-seq-len ");
    ASSERT_NE(at, std::string::npos) << message;
    train::TrainOptions advised = o;
    advised.max_seq_len = std::stoll(message.substr(at + 20));
    EXPECT_GT(advised.max_seq_len, 0);
    EXPECT_NO_THROW(train::resolve_auto_memory_options(config, advised, a100, log)) << advised.max_seq_len;
  }
  // With offloading left to `auto`, the planner turns it on by itself and the run fits.
  o.offload_checkpoints = "auto";
  o.embedding_on_host = "auto";
  const train::MemoryChoices chosen = train::resolve_auto_memory_options(config, o, a100, log);
  EXPECT_TRUE(chosen.offload_checkpoints);
  EXPECT_TRUE(train::plan_memory(config, o, chosen, a100).fits);
}

TEST(MemoryPlan, MemorySizesParseAndBadOnesNameTheFlag) {
  EXPECT_EQ(train::parse_memory_size("80GiB", "--max-gpu-mem"), int64_t{80} << 30);
  EXPECT_EQ(train::parse_memory_size("80GB", "--max-gpu-mem"), int64_t{80'000'000'000});
  EXPECT_EQ(train::parse_memory_size("1234", "--max-gpu-mem"), 1234);
  for (const char* bad : {"", "GiB", "-1GiB", "80 parsecs", "1e30"}) {
    try {
      train::parse_memory_size(bad, "--max-gpu-mem");
      ADD_FAILURE() << bad;
    } catch (const engine::InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("--max-gpu-mem '", 0), 0u) << e.what();
    }
  }
}
