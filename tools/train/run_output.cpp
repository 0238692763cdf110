// Staging, swapping in and cleaning up a run's output directory (see run_output.h).
#include "tools/train/run_output.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "engine/error.h"

namespace train {

namespace fs = std::filesystem;

namespace {

// Absolute, without a trailing slash, so that parent_path() is the directory holding it.
fs::path normal(const fs::path& output) {
  fs::path p = fs::absolute(output).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p;
}

// A hidden name beside the output: "." + name + suffix (appended, not prepended: GCC 12's
// -Wrestrict misreads `"." + std::string`).
std::string hidden_prefix(const fs::path& p, const char* suffix) {
  std::string name(".");
  name += p.filename().string();
  name += suffix;
  return name;
}
std::string staging_prefix(const fs::path& p) { return hidden_prefix(p, ".train70b-staging."); }
std::string aside_prefix(const fs::path& p) { return hidden_prefix(p, ".train70b-old."); }

// `name` is prefix + a process id; *pid gets it.
bool named_with_pid(const std::string& name, const std::string& prefix, long* pid) {
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return false;
  const std::string digits = name.substr(prefix.size());
  if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return false;
  *pid = std::stol(digits);
  return true;
}

bool alive(long pid) { return pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH; }

void rename_or_throw(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    throw engine::Error(engine::one_line("cannot rename " + from.string() + " to " + to.string() + ": " +
                                         std::strerror(errno)));
}

void write_marker(const fs::path& dir) {
  std::ofstream(dir / kOutputMarker) << "This directory is the output of train70b; a new run replaces it whole.\n";
}

// Checkpoints an interrupted swap left in `aside` go back to the output.
void recover_checkpoints(const fs::path& aside, const fs::path& output, std::ostream& log) {
  std::error_code ec;
  if (fs::is_directory(aside / "checkpoints", ec) && fs::is_directory(output, ec) &&
      !fs::exists(output / "checkpoints", ec)) {
    rename_or_throw(aside / "checkpoints", output / "checkpoints");
    fsync_directory(output);
    log << "recovered " << (output / "checkpoints").string() << " from an interrupted run\n";
  }
}

}  // namespace

void fsync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

void fsync_tree(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
    ENGINE_CHECK(fd >= 0, e.path().string(), ": cannot open to flush: ", std::strerror(errno));
    const int rc = ::fsync(fd);
    ::close(fd);
    ENGINE_CHECK(rc == 0, e.path().string(), ": cannot flush: ", std::strerror(errno));
  }
  fsync_directory(dir);
}

void check_output_is_ours(const fs::path& output) {
  std::error_code ec;
  const fs::path p = normal(output);
  if (!fs::exists(fs::symlink_status(p, ec))) return;
  ENGINE_INPUT_CHECK(fs::is_directory(fs::symlink_status(p, ec)), "--output ", output.string(),
                     ": exists and is not a directory");
  if (fs::exists(p / kOutputMarker, ec)) return;
  for (const auto& e : fs::directory_iterator(p, ec))
    ENGINE_INPUT_CHECK(false, "--output ", output.string(),
                       ": a directory train70b did not make, holding '", e.path().filename().string(),
                       "'; a run replaces its output whole, so give a new or empty directory");
  ENGINE_INPUT_CHECK(!ec, "--output ", output.string(), ": ", ec.message());
}

void clean_stale_temporaries(const fs::path& output, std::ostream& log) {
  const fs::path p = normal(output);
  std::error_code ec;
  if (!fs::is_directory(p.parent_path(), ec)) return;
  std::vector<fs::path> staging, aside;
  for (const auto& e : fs::directory_iterator(p.parent_path(), ec)) {
    long pid = 0;
    const std::string name = e.path().filename().string();
    if (named_with_pid(name, staging_prefix(p), &pid) && !alive(pid)) staging.push_back(e.path());
    if (named_with_pid(name, aside_prefix(p), &pid) && !alive(pid)) aside.push_back(e.path());
  }
  for (const fs::path& old : aside) {  // a swap by two renames stopped between them
    if (!fs::exists(p, ec)) {
      rename_or_throw(old, p);
      fsync_directory(p.parent_path());
      log << "restored " << p.string() << " from an interrupted swap\n";
      continue;
    }
    recover_checkpoints(old, p, log);
    fs::remove_all(old);
    log << "removed " << old.string() << ", left by an interrupted run\n";
  }
  for (const fs::path& dir : staging) {  // after an exchange it holds the old output
    recover_checkpoints(dir, p, log);
    fs::remove_all(dir);
    log << "removed " << dir.string() << ", left by an interrupted run\n";
  }
  // Inside the output and its checkpoints: temporaries of killed writers.
  for (const fs::path& dir : {p, p / "checkpoints"}) {
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<fs::path> stale;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      const size_t tmp = name.rfind(".tmp.");
      long pid = 0;
      if ((tmp != std::string::npos && named_with_pid(name, name.substr(0, tmp + 5), &pid) && !alive(pid)) ||
          (named_with_pid(name, ".tmp-checkpoint.", &pid) && !alive(pid)) ||
          (named_with_pid(name, ".train70b-write-test.", &pid) && !alive(pid)) || name == "metrics.jsonl.partial")
        stale.push_back(e.path());
    }
    for (const fs::path& s : stale) {
      fs::remove_all(s);
      log << "removed " << s.string() << ", left by an interrupted run\n";
    }
  }
}

void ensure_output_dir(const fs::path& output) {
  const fs::path p = normal(output);
  if (fs::exists(p / kOutputMarker)) return;
  fs::create_directories(p);
  write_marker(p);
  fsync_directory(p);
  fsync_directory(p.parent_path());
}

fs::path live_metrics_path(const fs::path& output) {
  const fs::path p = normal(output);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(p.parent_path(), ec)) {
    long pid = 0;
    if (named_with_pid(e.path().filename().string(), staging_prefix(p), &pid) && alive(pid) &&
        fs::exists(e.path() / "metrics.jsonl.partial", ec))
      return e.path() / "metrics.jsonl.partial";
  }
  return {};
}

StagedOutput::StagedOutput(const fs::path& output)
    : output_(normal(output)),
      staging_(output_.parent_path() / (staging_prefix(output_) + std::to_string(::getpid()))) {
  fs::create_directories(output_.parent_path());
  fs::remove_all(staging_);  // a earlier run in this process that failed to clean up
  fs::create_directory(staging_);
  write_marker(staging_);
}

StagedOutput::~StagedOutput() {
  if (published_) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
}

void StagedOutput::publish() {
  fsync_tree(staging_);
  const fs::path parent = output_.parent_path();
  // The checkpoints move into the new output before the swap, so that the swapped-in output
  // is final at once; a kill between the two leaves them in a staging directory of a dead
  // process, from where clean_stale_temporaries moves them back.
  std::error_code ec;
  if (fs::is_directory(output_ / "checkpoints", ec) && !fs::exists(staging_ / "checkpoints", ec)) {
    rename_or_throw(output_ / "checkpoints", staging_ / "checkpoints");
    fsync_directory(staging_);
    fsync_directory(output_);
  }
  if (!fs::exists(fs::symlink_status(output_))) {
    rename_or_throw(staging_, output_);
    published_ = true;
    fsync_directory(parent);
    return;
  }
  fs::path aside = staging_;  // after the exchange it holds the old output
  if (::renameat2(AT_FDCWD, staging_.c_str(), AT_FDCWD, output_.c_str(), RENAME_EXCHANGE) != 0) {
    ENGINE_CHECK(errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP, "cannot swap ", staging_.string(),
                 " in as ", output_.string(), ": ", std::strerror(errno));
    // No atomic exchange here: set the old output aside first (clean_stale_temporaries
    // moves it back if a kill comes between the two renames).
    aside = parent / (aside_prefix(output_) + std::to_string(::getpid()));
    rename_or_throw(output_, aside);
    rename_or_throw(staging_, output_);
  }
  published_ = true;
  fsync_directory(parent);
  fs::remove_all(aside, ec);
}

}  // namespace train
