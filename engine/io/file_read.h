// Reading the user's files without the two ways a plain open/read can go wrong:
// blocking forever (a FIFO or a device where a model file was expected: open() itself waits
// for a writer) and reading past the end of a file that shrank after it was opened (a mapped
// copy dies with SIGBUS there; pread just returns short, which is reported as an error).
//
// Every error is an engine::InputError, one line starting with the path:
// "<path>: cannot open: not a regular file".
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace engine::io {

// Opens `path` read-only without blocking, refuses anything but a regular file, and returns
// the descriptor (close it with ::close) and the file's size.
int open_regular_file(const std::string& path, uint64_t* size);

// Reads `n` bytes at `offset`, retrying EINTR and short reads; returns the number read, which
// is less than `n` only at the end of the file. Errors name `path`.
size_t pread_full(int fd, void* dst, size_t n, uint64_t offset, const std::string& path);

// The whole of a small regular file (a config, an index); refuses files over `limit` bytes.
std::string read_small_file(const std::string& path, uint64_t limit);

}  // namespace engine::io
