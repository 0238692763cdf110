// Philox4x32-10 counter-based RNG (Salmon et al., "Parallel random numbers: as easy
// as 1, 2, 3", SC'11). A draw is a pure function of (seed, counter), so the CPU and
// every CUDA thread produce the same numbers for the same seed and offset with no
// shared state: element i of a tensor uses counter = offset + i.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/math/hd.h"

namespace kmath {

struct Philox4 {
  uint32_t v[4];
};

HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Ten rounds of Philox4x32 on counter (ctr) with key (seed).
HD Philox4 philox4x32_10(uint64_t seed, uint64_t ctr_lo, uint64_t ctr_hi = 0) {
  uint32_t c0 = static_cast<uint32_t>(ctr_lo), c1 = static_cast<uint32_t>(ctr_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(ctr_hi), c3 = static_cast<uint32_t>(ctr_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo32(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = mulhilo32(0xCD9E8D57u, c2, &hi1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// Uniform float in [0, 1) from the top 24 bits of a word (exactly representable).
HD float uint_to_unit_float(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }

// The uniform draw for element `index` of a stream identified by (seed, offset).
HD float philox_uniform(uint64_t seed, uint64_t offset, uint64_t index) {
  return uint_to_unit_float(philox4x32_10(seed, offset + index).v[0]);
}

// A standard normal draw for element `index` (Box-Muller on two words of one block).
// Uniform draws are bit-identical on CPU and GPU; normal draws agree to a few ulp
// (logf/cosf differ between libm and the CUDA math library).
HD float philox_normal(uint64_t seed, uint64_t offset, uint64_t index) {
  Philox4 r = philox4x32_10(seed, offset + index);
  float u1 = (static_cast<float>(r.v[0] >> 8) + 1.0f) * (1.0f / 16777216.0f);  // (0, 1]
  float u2 = uint_to_unit_float(r.v[1]);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
}

}  // namespace kmath
