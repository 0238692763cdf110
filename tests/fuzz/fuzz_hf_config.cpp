// libFuzzer target: hf_config (tests/support/fuzz_entries.h says what it runs and what counts as a bug).
#include <cstddef>
#include <cstdint>

#include "tests/support/fuzz_entries.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  testing_support::fuzz::hf_config(data, size);
  return 0;
}
