// train70b --method dpo on the CUDA path end to end (label gpu): the DPO demo with
// --device cuda (NF4 base, bf16 activations, fp32 LoRA masters), the reference computed
// each step (--precompute-ref false: the adapter-off pass inside the training loop) and
// the held-out pairs evaluated on the device. Before training the policy is the
// reference (loss log 2 up to the bf16 rounding of log-probs that are then equal on both
// sides: exactly log 2); after 12 steps the policy has moved (12 steps are too few for
// the held-out loss to fall reliably: it rises to 0.80 on the CPU first) and the
// metrics and the adapter are finite.
// The numbers of one DPO micro-batch against the CPU are tests/models/test_dpo_cuda.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "engine/io/safetensors.h"
#include "tests/support/gpu.h"
#include "tools/train/trainer.h"

namespace fs = std::filesystem;

namespace {

TEST(Train70bDpoCuda, DemoTrainsOnTheDevice) {
  SKIP_WITHOUT_GPU();
  const fs::path out = fs::temp_directory_path() / ("train70b_dpo_cuda_" + std::to_string(::getpid()));
  fs::remove_all(out);
  train::TrainOptions o;
  o.demo = true;
  o.method = "dpo";
  o.device = "cuda";
  o.output = out.string();
  o.lr = 2e-3f;  // the demo's defaults (options.cpp), set here as --demo would
  o.batch_size = 8;
  o.beta = 0.5f;
  o.max_steps = 12;
  o.precompute_ref = false;
  std::ostringstream log;
  const train::RunSummary s = train::run_training(o, log);
  EXPECT_EQ(s.steps, 12);
  EXPECT_NEAR(s.before.loss, std::log(2.0), 1e-12) << log.str();
  EXPECT_TRUE(std::isfinite(s.after.loss) && std::isfinite(s.after.accuracy)) << log.str();
  EXPECT_GT(std::fabs(s.after.loss - s.before.loss), 1e-3) << log.str();
  EXPECT_EQ(s.nonfinite_steps, 0);
  engine::io::SafetensorsFile adapter((out / "adapter_model.safetensors").string());
  for (const std::string& name : adapter.names())
    for (float v : adapter.load(name).to_floats()) ASSERT_TRUE(std::isfinite(v)) << name;
  fs::remove_all(out);
}

}  // namespace
