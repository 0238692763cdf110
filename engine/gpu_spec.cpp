#include "engine/gpu_spec.h"

#include <charconv>
#include <cstdint>
#include <limits>

#include "engine/error.h"

namespace engine {

namespace {

constexpr size_t KiB = 1024;
constexpr size_t GiB = size_t{1} << 30;

// GpuSpec's defaults are the A100's; only the name and the memory differ.
GpuSpec a100(const std::string& name, size_t bytes) { return {.name = name, .total_memory = bytes}; }

GpuSpec hopper(const std::string& name, size_t bytes) {
  return {.name = name, .major = 9, .minor = 0, .sms = 132, .shared_per_block_optin = 227 * KiB,
          .shared_per_sm = 228 * KiB, .total_memory = bytes, .l2_bytes = 50 << 20};
}

bool g_dry_run = false;

}  // namespace

bool dry_run_active() { return g_dry_run; }
void set_dry_run_active(bool active) { g_dry_run = active; }

GpuSpec parse_gpu_spec(const std::string& text) {
  if (text == "a100-80gb") return a100(text, 80 * GiB);
  if (text == "h100-80gb") return hopper(text, 80 * GiB);
  if (text == "h200") return hopper(text, 143'771'000'832ull);
  const char* begin = text.data();
  const char* end = begin + text.size();
  uint64_t value = 0;
  auto [stop, error] = std::from_chars(begin, end, value);
  const std::string suffix(stop, end);
  struct Unit {
    const char* name;
    uint64_t bytes;
  };
  constexpr Unit kUnits[] = {{"", 1},          {"KiB", KiB},          {"MiB", KiB * KiB},
                             {"GiB", GiB},     {"KB", 1000},          {"MB", 1000'000},
                             {"GB", 1000'000'000}};
  const Unit* unit = nullptr;
  for (const Unit& u : kUnits)
    if (suffix == u.name) unit = &u;
  ENGINE_INPUT_CHECK(error == std::errc() && stop != begin && unit != nullptr && value > 0,
                     "'", text, "' is not a100-80gb, h100-80gb, h200 or a byte count (such as ",
                     "85899345920 or 48GiB)");
  ENGINE_INPUT_CHECK(value <= std::numeric_limits<uint64_t>::max() / unit->bytes, "'", text,
                     "' is too large a byte count");
  return a100("a100 with " + text, static_cast<size_t>(value * unit->bytes));
}

}  // namespace engine
