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
