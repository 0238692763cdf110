// Atomic file replacement: a file is either its old self or the complete new content,
// never a torn mix. AtomicFileWriter writes to "<path>.tmp.<pid>", and commit() fsyncs it,
// renames it over <path>, then fsyncs the directory (best effort) so the rename is durable.
// Destroying a writer that was not committed (say, during an exception) removes the
// temporary file and leaves <path> untouched. write_file_atomic() does all of this for a
// buffer held in memory.
//
// Every error is an engine::Error with a one-line message naming the target path, the
// action and the system's reason: "<path>: cannot <action> '<temp path>': <strerror>",
// action one of create, write, flush, close, rename.
#pragma once
#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace engine::io {

class AtomicFileWriter {
 public:
  // Creates (or truncates) the temporary file; throws engine::Error if it cannot.
  explicit AtomicFileWriter(std::string path);
  // Removes the temporary file unless committed; never throws.
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Appends `bytes` bytes (retrying short writes and EINTR).
  void write(const void* data, size_t bytes);
  // fsync, close, rename over path(), then a best-effort fsync of the directory. After a
  // failed write or commit, or after a commit, write() and commit() throw.
  void commit();

  // The target path (not the temporary one).
  const std::string& path() const { return path_; }

 private:
  [[noreturn]] void fail(const std::string& action, int err);
  void check_usable(const char* action) const;

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  bool committed_ = false;
  bool failed_ = false;
};

// Replaces `path` with `content` atomically (see AtomicFileWriter).
void write_file_atomic(const std::string& path, std::string_view content);

// A new directory, all or nothing: `fill` writes its files into a hidden temporary directory
// beside it (".<name>.tmp.<pid>"), which is then renamed to `dir`. `dir` must not exist or be
// an empty directory; errors (engine::InputError) name `flag` ("--output") and `dir` as the
// user gave it. On any exception the temporary directory is removed and `dir` is untouched.
void write_new_directory(const std::string& dir, const char* flag,
                         const std::function<void(const std::filesystem::path& tmp)>& fill);

}  // namespace engine::io
