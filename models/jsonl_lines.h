// The lines of a JSONL file, read with a bound on each line's size: a dataset line is parsed,
// tokenized and templated whole, which costs about 15 times its bytes (a 100 MB line took
// 2 GB), so a longer line than `max_line_bytes` is refused, with one line naming the file,
// the line and the limit, before more than the limit is read into memory.
#pragma once
#include <cstdint>
#include <fstream>
#include <string>

namespace models {

// 16 MiB: several million tokens, far more than any --max-seq-len keeps of a line.
inline constexpr int64_t kDefaultMaxLineBytes = int64_t{16} << 20;

class JsonlLineReader {
 public:
  // Throws engine::InputError when the file cannot be opened.
  JsonlLineReader(std::string path, int64_t max_line_bytes);
  // The next non-blank line (without its "\n" or "\r\n", which the limit does not count)
  // and its 1-based number; false at the end. Throws engine::InputError for an over-long line or a read error.
  bool next(std::string* text, int64_t* number);

 private:
  std::string path_;
  int64_t max_bytes_;
  std::ifstream in_;
  int64_t line_ = 0;
};

}  // namespace models
