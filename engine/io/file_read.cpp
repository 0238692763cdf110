// See file_read.h.
#include "engine/io/file_read.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "engine/error.h"

namespace engine::io {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw InputError(one_line(path + ": " + what));
}

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

}  // namespace

int open_regular_file(const std::string& path, uint64_t* size) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(path, "cannot open: " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(path, "cannot open: " + errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "cannot open: not a regular file");
  }
  // Back to blocking reads (regular files ignore the flag; this keeps the descriptor plain).
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

size_t pread_full(int fd, void* dst, size_t n, uint64_t offset, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd, static_cast<char*>(dst) + done, n - done,
                                static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail(path, "cannot read: " + errno_text(errno));
    if (got == 0) break;  // end of file
    done += static_cast<size_t>(got);
  }
  return done;
}

std::string read_small_file(const std::string& path, uint64_t limit) {
  uint64_t size = 0;
  const int fd = open_regular_file(path, &size);
  std::string out;
  try {
    if (size > limit)
      fail(path, "larger than the " + std::to_string(limit) + "-byte limit");
    out.resize(static_cast<size_t>(size));
    out.resize(pread_full(fd, out.data(), out.size(), 0, path));  // shorter if it shrank
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return out;
}

}  // namespace engine::io
