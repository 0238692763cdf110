// The architecture table of the SIMT emulation (model in arch.h). Values from the CUDA C++
// Programming Guide, "Technical Specifications per Compute Capability", and the parts'
// whitepapers (L2 of the example part).
#include "tests/simt/arch.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace simt {

namespace {

constexpr size_t KiB = 1024;

constexpr Arch kArchs[] = {
    // name    example                major minor  smem/block  smem/SM   thr/blk thr/SM regs/blk regs/SM  L2
    {"sm_80", "A100", 8, 0, 163 * KiB, 164 * KiB, 1024, 2048, 65536, 65536, 40 << 20},
    {"sm_86", "RTX A6000, RTX 3090", 8, 6, 99 * KiB, 100 * KiB, 1024, 1536, 65536, 65536, 6 << 20},
    {"sm_89", "RTX 4090, RTX 6000 Ada", 8, 9, 99 * KiB, 100 * KiB, 1024, 1536, 65536, 65536,
     72 << 20},
    {"sm_90", "H100, H200", 9, 0, 227 * KiB, 228 * KiB, 1024, 2048, 65536, 65536, 50 << 20},
};

}  // namespace

const Arch* find_arch(const char* name) {
  for (const Arch& a : kArchs)
    if (std::strcmp(a.name, name) == 0) return &a;
  return nullptr;
}

const Arch& arch() {
  static const Arch& selected = [] () -> const Arch& {
    const char* name = std::getenv("SIMT_GPU");
    if (name == nullptr || *name == '\0') return kArchs[0];
    if (const Arch* a = find_arch(name)) return *a;
    std::fprintf(stderr, "simt: SIMT_GPU=\"%s\" is not one of", name);
    for (const Arch& a : kArchs) std::fprintf(stderr, " %s", a.name);
    std::fprintf(stderr, "\n");
    std::abort();
  }();
  return selected;
}

}  // namespace simt
