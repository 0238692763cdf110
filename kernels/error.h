// The one error type of the engine. It lives at the bottom of the dependency order
// (tools -> models -> engine -> kernels) so that kernel launchers can throw it and
// every layer above can catch it: engine::Error is this type (engine/error.h).
// Every message is one line. Header-only, no CUDA: the CPU-only build uses it too.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace kernels {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}
}  // namespace detail

}  // namespace kernels

// KERNELS_CHECK(cond, message parts...): a launcher's precondition; throws
// kernels::Error "file:line: message" (an internal invariant, so the place is kept).
#define KERNELS_CHECK(cond, ...)                                                      \
  do {                                                                                \
    if (!(cond))                                                                      \
      throw ::kernels::Error(::kernels::detail::concat(__FILE__, ":", __LINE__, ": ", \
                                                       __VA_ARGS__));                 \
  } while (0)
