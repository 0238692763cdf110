// engine_demo as a user runs it: a short run exits 0 only when the held-out loss
// fell (the program checks), and bad arguments give one line and a non-zero exit.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <string>

namespace {

struct RunResult {
  int exit_code;
  std::string output;
};

RunResult run(const std::string& args) {
  std::string cmd = std::string(ENGINE_DEMO_PATH) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 512> buf;
  while (fgets(buf.data(), buf.size(), pipe)) out += buf.data();
  int status = pclose(pipe);
  return {WEXITSTATUS(status), out};
}

TEST(EngineDemo, ShortRunLowersHeldOutLoss) {
  RunResult r = run("40");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("held-out before training"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("held-out after 40 steps"), std::string::npos) << r.output;
}

TEST(EngineDemo, BadStepCountIsOneLineError) {
  for (const char* bad : {"abc", "-5", "0"}) {
    RunResult r = run(bad);
    EXPECT_EQ(r.exit_code, 2) << bad;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    EXPECT_NE(r.output.find("engine_demo:"), std::string::npos) << r.output;
  }
}

}  // namespace
