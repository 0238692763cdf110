#include "tests/support/process.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace fs = std::filesystem;

namespace testing_support {

RunResult run_command(const std::string& command) {
  static std::atomic<int> counter{0};
  const fs::path err_file = fs::temp_directory_path() / ("run_command_err_" + std::to_string(::getpid()) +
                                                         "_" + std::to_string(counter++));
  const std::string cmd = command + " 2>" + err_file.string();
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (pipe != nullptr && fgets(buf.data(), buf.size(), pipe)) out += buf.data();
  const int status = pipe != nullptr ? pclose(pipe) : -1;
  std::ifstream in(err_file);
  std::string err((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  fs::remove(err_file);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out, err};
}

int start_command(const std::string& command, const std::string& log_file, const std::string& environment) {
  // env execs the command in turn, so the pid stays the command's.
  const std::string line = "exec env " + environment + " " + command + " >" + log_file + " 2>&1";
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

int wait_command(int pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1000;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

}  // namespace testing_support
