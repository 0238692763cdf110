// `train70b quantize` (tools/train/quantize.cpp): the command line around
// models::write_bnb_checkpoint, whose output and errors tests/models/test_bnb_checkpoint.cpp
// checks in detail.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "models/bnb_checkpoint.h"
#include "tools/train/quantize.h"

namespace {

namespace fs = std::filesystem;

int run(std::vector<std::string> args) {
  args.insert(args.begin(), "quantize");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return train::quantize_main(static_cast<int>(argv.size()), argv.data());
}

const std::string kDense = std::string(ENGINE_SOURCE_DIR) + "/tests/data/hf_reference";

TEST(Train70bQuantize, WritesACheckpointTheLoaderReads) {
  const fs::path out = fs::temp_directory_path() / ("quantize_cli_" + std::to_string(::getpid()));
  fs::remove_all(out);
  testing::internal::CaptureStdout();
  EXPECT_EQ(run({"--model", kDense, "--output", out.string(), "--max-shard-size", "1MB"}), 0);
  EXPECT_NE(testing::internal::GetCapturedStdout().find("quantize: wrote"), std::string::npos);
  const auto q = models::read_bnb_quantization((out / "config.json").string());
  ASSERT_TRUE(q.has_value());
  EXPECT_TRUE(q->double_quant);
  // A second run into the same directory is refused (exit 1, one line), the first kept.
  testing::internal::CaptureStderr();
  EXPECT_EQ(run({"--model", kDense, "--output", out.string()}), 1);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("already exists"), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), err.size() - 1) << err;
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  fs::remove_all(out);
}

TEST(Train70bQuantize, FlagErrors) {
  testing::internal::CaptureStderr();
  EXPECT_EQ(run({"--model", kDense}), 2);  // --output is required
  EXPECT_EQ(run({"--model", kDense, "--output", "/nonexistent/x", "--max-shard-size", "huge"}), 1);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("--output is required"), std::string::npos) << err;
  EXPECT_NE(err.find("--max-shard-size huge"), std::string::npos) << err;
}

}  // namespace
