// One error type for the whole engine. Every message is one line that names the
// place (file:line of the check, or the user's file and position) so tools can
// print it verbatim and exit non-zero.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace engine {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Raised when an allocation would exceed the hard memory budget (never a raw OOM).
class OutOfBudget : public Error {
 public:
  using Error::Error;
};

// `s` with control characters (and, if asked, non-ASCII bytes) replaced by '?', so
// that an error quoting names or bytes from a user's file stays one printable line.
inline std::string one_line(std::string s, bool mask_non_ascii = false) {
  for (char& c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || (mask_non_ascii && u > 0x7f)) c = '?';
  }
  return s;
}

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}
}  // namespace detail

}  // namespace engine

// ENGINE_CHECK(cond, message parts...): throws engine::Error "file:line: message".
#define ENGINE_CHECK(cond, ...)                                                     \
  do {                                                                              \
    if (!(cond))                                                                    \
      throw ::engine::Error(::engine::detail::concat(__FILE__, ":", __LINE__, ": ", \
                                                     __VA_ARGS__));                 \
  } while (0)
