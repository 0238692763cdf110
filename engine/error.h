// One error type for the whole engine. Every message is one line that names the
// place, so tools can print it verbatim and exit non-zero: a broken invariant of the
// engine (ENGINE_CHECK) names file:line of the check; a problem in the user's input
// (engine::InputError) names the user's file and position, never a source path.
#pragma once
#include <string>

#include "kernels/error.h"

namespace engine {

// The error type lives below the engine, in kernels/error.h, so that a failed kernel
// launch or CUDA call is caught as an engine::Error like any other.
using Error = ::kernels::Error;

// Raised when an allocation would exceed the hard memory budget (never a raw OOM).
class OutOfBudget : public Error {
 public:
  using Error::Error;
};

// A problem in what the user gave (a file, a config, a dataset, a flag). The message
// names the user's file and place, or the flag, and never a source path: tools print it
// as it is. Thrown by ENGINE_INPUT_CHECK or directly; catchable as engine::Error.
class InputError : public Error {
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
using ::kernels::detail::concat;
}  // namespace detail

}  // namespace engine

// ENGINE_CHECK(cond, message parts...): throws engine::Error "file:line: message"; for the
// engine's own invariants, where the place in the source is what a bug report needs.
#define ENGINE_CHECK(cond, ...) KERNELS_CHECK(cond, __VA_ARGS__)  // engine::Error is kernels::Error

// ENGINE_INPUT_CHECK(cond, message parts...): throws engine::InputError "message". For
// checks of what a user gave; the message itself names their file and place.
#define ENGINE_INPUT_CHECK(cond, ...)                                                   \
  do {                                                                                  \
    if (!(cond)) throw ::engine::InputError(::engine::detail::concat(__VA_ARGS__));     \
  } while (0)
