// AtomicFileWriter and write_file_atomic: write to "<path>.tmp.<pid>", fsync, rename over
// the target, fsync the directory, and remove the temporary file on any failure. See
// atomic_file.h for the guarantees and the error format.
#include "engine/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <system_error>
#include <utility>

#include "engine/error.h"

namespace engine::io {

namespace {

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

// "<path>: <what>" on one line (a path may legally hold control characters).
std::string message(const std::string& path, const std::string& what) {
  return one_line(path + ": " + what);
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), temp_path_(path_ + ".tmp." + std::to_string(::getpid())) {
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  // Nothing was created, and the destructor will not run: just report.
  if (fd_ < 0) fail("create", errno);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

void AtomicFileWriter::fail(const std::string& action, int err) {
  failed_ = true;
  throw Error(message(path_, "cannot " + action + " '" + temp_path_ + "': " + errno_text(err)));
}

void AtomicFileWriter::check_usable(const char* action) const {
  if (committed_) throw Error(message(path_, std::string("cannot ") + action + ": already committed"));
  if (failed_)
    throw Error(message(path_, std::string("cannot ") + action + ": an earlier write failed"));
}

void AtomicFileWriter::write(const void* data, size_t bytes) {
  check_usable("write");
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    // Linux writes at most ~2 GiB per call; a short write just continues.
    ssize_t n = ::write(fd_, p, std::min<size_t>(bytes, size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("write", n < 0 ? errno : EIO);
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void AtomicFileWriter::commit() {
  check_usable("commit");
  if (::fsync(fd_) != 0) fail("flush", errno);
  if (::close(std::exchange(fd_, -1)) != 0) fail("close", errno);
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) fail("rename", errno);
  committed_ = true;

  // Make the rename itself durable; the file is complete either way, so this is best effort.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, std::string_view content) {
  AtomicFileWriter out(path);
  out.write(content.data(), content.size());
  out.commit();
}

void write_new_directory(const std::string& dir, const char* flag,
                         const std::function<void(const std::filesystem::path& tmp)>& fill) {
  namespace fs = std::filesystem;
  ENGINE_INPUT_CHECK(!dir.empty(), flag, ": empty path");
  const fs::path absolute = fs::absolute(dir).lexically_normal();
  const fs::path target = absolute.filename().empty() ? absolute.parent_path() : absolute;
  ENGINE_INPUT_CHECK(!fs::exists(target) || (fs::is_directory(target) && fs::is_empty(target)), flag, " ", dir,
                     ": already exists and is not an empty directory");
  std::string name(".");  // appended, not "." + string: GCC 12's -Wrestrict misreads that
  name += target.filename().string();
  name += ".tmp.";
  name += std::to_string(::getpid());
  const fs::path tmp = target.parent_path() / name;
  std::error_code ec;
  fs::create_directories(tmp, ec);
  ENGINE_INPUT_CHECK(!ec, flag, " ", dir, ": cannot create ", tmp.string(), " (", ec.message(), ")");
  try {
    fill(tmp);
    fs::rename(tmp, target, ec);  // replaces an empty directory; atomic on one file system
    ENGINE_INPUT_CHECK(!ec, flag, " ", dir, ": cannot rename ", tmp.string(), " (", ec.message(), ")");
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace engine::io
