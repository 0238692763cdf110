#include "models/jsonl_lines.h"

#include <cerrno>
#include <cstring>

#include "engine/error.h"

namespace models {

JsonlLineReader::JsonlLineReader(std::string path, int64_t max_line_bytes)
    : path_(std::move(path)), max_bytes_(max_line_bytes), in_(path_, std::ios::binary) {
  if (!in_) throw engine::InputError(path_ + ": cannot open: " + std::strerror(errno));
}

bool JsonlLineReader::next(std::string* text, int64_t* number) {
  std::streambuf* buf = in_.rdbuf();
  for (;;) {
    text->clear();
    if (buf->sgetc() == std::char_traits<char>::eof()) {
      if (in_.bad()) throw engine::InputError(path_ + ": read error: " + std::strerror(errno));
      return false;
    }
    ++line_;
    const int eof = std::char_traits<char>::eof();
    for (int c = buf->sbumpc(); c != eof && c != '\n'; c = buf->sbumpc()) {
      if (c == '\r' && (buf->sgetc() == '\n' || buf->sgetc() == eof)) continue;  // CRLF: not counted
      if (static_cast<int64_t>(text->size()) >= max_bytes_)
        throw engine::InputError(path_ + ":" + std::to_string(line_) + ": line longer than " +
                                 std::to_string(max_bytes_) + " bytes (--max-line-size; a line is parsed and " +
                                 "tokenized whole, about 15 bytes of memory per byte of it)");
      text->push_back(static_cast<char>(c));
    }
    if (text->find_first_not_of(" \t\r\f\v") == std::string::npos) continue;
    *number = line_;
    return true;
  }
}

}  // namespace models
