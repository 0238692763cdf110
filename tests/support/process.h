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

// Starts `command` under /bin/sh in the background (the shell execs it, so the returned pid
// is the command's own, for kill(2)); stdout and stderr go to `log_file`.
int start_command(const std::string& command, const std::string& log_file,
                  const std::string& environment = "");
// Waits for a started command: its exit status, or -N when signal N ended it.
int wait_command(int pid);

}  // namespace testing_support
