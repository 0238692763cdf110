// Runs a command line as a user would (through the shell) and collects what it printed,
// for the tests of the command-line tools.
#pragma once
#include <string>

namespace testing_support {

struct RunResult {
  int exit_code;
  std::string out, err;  // standard output; standard error
};

// `command` runs under /bin/sh with stdout captured and stderr sent to a temporary file
// (read back, then removed), so the two streams stay apart.
RunResult run_command(const std::string& command);

}  // namespace testing_support
