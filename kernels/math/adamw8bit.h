// 8-bit AdamW states (bitsandbytes' AdamW8bit / paged_adamw_8bit): blockwise dynamic
// quantization of both moments, shared by the CPU reference (engine/optim/paged_adamw.cpp)
// and the CUDA kernel (kernels/adamw8bit.cu), so both give bitwise identical results.
//
// A parameter of n >= kAdamW8bitMinNumel elements keeps its moments as u8 codes in blocks of
// kAdamW8bitBlock = 256 values (the last block may be short), each block with one fp32
// absmax per moment. One step, per block:
//   m  = signed_map[qm] * absmax_m           v = unsigned_map[qv] * absmax_v     (dequantize)
//   kmath::adamw_update(p, g, m, v)          (decay, both moments, the update: adamw.h)
//   absmax_m' = max |m|, absmax_v' = max |v| over the block (exact: max has no rounding)
//   qm' = nearest signed-map entry to m / absmax_m', kept on m's side of zero
//   qv' = nearest unsigned-map entry to v / absmax_v'
// The maps are bitsandbytes' create_dynamic_map(signed=True) (kmath::dynamic_map_value,
// kernels/math/nf4.h) and create_dynamic_map(signed=False) (unsigned_dynamic_map_value).
// The search is bnb's dQuantize (kmath::dynamic_map_quantize); the sign rule is that of
// bnb's kOptimizerStatic8bit2StateBlockwise (a nonzero m never becomes a code of the other
// sign). An all-zero block (absmax 0) quantizes to the map's zero, so it stays exactly 0.
// bnb's CPU backend quantizes with a binary search that is not nearest for values below
// about 1e-4 of the block's absmax; this follows its CUDA kernels (nearest code), see
// tests/data/make_bnb_adamw8_reference.py.
#pragma once
#include <cstdint>

#include "kernels/math/adamw.h"
#include "kernels/math/hd.h"
#include "kernels/math/nf4.h"

namespace kmath {

constexpr int kAdamW8bitBlock = 256;
constexpr int64_t kAdamW8bitMinNumel = 4096;  // smaller tensors keep fp32 states (bnb's min_8bit_size)
constexpr int kSignedMapZero = 127;           // dynamic_map_value(127) == 0
constexpr int kUnsignedMapZero = 0;           // unsigned_dynamic_map_value(0) == 0

// bnb create_dynamic_map(signed=False): for g = 0..6 the 2^(g+1) midpoints of
// linspace(0.1, 1, 2^(g+1) + 1) times 10^(g-6), plus 0 and 1.0, sorted: index 0 is 0, 255 is
// 1.0, and positive number p = 0..253 in ascending order is entry j = p + 2 - 2^(g+1) of group
// g = floor(log2(p + 2)) - 1. Same float32 arithmetic as dynamic_map_value.
HD float unsigned_dynamic_map_value(int i) {
  if (i <= 0) return 0.0f;
  if (i >= 255) return 1.0f;
  const int p = i - 1;
  int g = 0;
  while ((4 << g) <= p + 2) ++g;  // 2^(g+1) <= p + 2 < 2^(g+2)
  const int j = p + 2 - (2 << g);
  const int steps = (2 << g) + 1;
  const float mean = (dynamic_map_linspace(j, steps) + dynamic_map_linspace(j + 1, steps)) / 2.0f;
  float scale = 1.0f;
  switch (g) {
    case 0: scale = 1e-6f; break;
    case 1: scale = 1e-5f; break;
    case 2: scale = 1e-4f; break;
    case 3: scale = 1e-3f; break;
    case 4: scale = 1e-2f; break;
    case 5: scale = 1e-1f; break;
    default: break;
  }
  return scale * mean;
}

struct UnsignedDynamicMap {
  HD float operator[](int i) const { return unsigned_dynamic_map_value(i); }
};

HD float blockwise_dequantize(float map_value, float absmax) { return rn::mul(map_value, absmax); }

// The code of x in a block with absmax `absmax` (>= |x|). `map` is indexable by int (a
// table, a shared-memory copy, DynamicMap / UnsignedDynamicMap).
template <class Map>
HD uint8_t blockwise_quantize_signed(float x, float absmax, const Map& map) {
  if (!(absmax > 0.0f)) return static_cast<uint8_t>(kSignedMapZero);
  int q = dynamic_map_quantize(rn::div(x, absmax), map);
  // Keep the sign (bnb's optimizer kernel): a small nonzero m must not flip sign.
  const float code = map[q];
  if (x > 0.0f && code < 0.0f) q += 1;
  else if (x < 0.0f && code > 0.0f) q -= 1;
  else if (x < 0.0f && code == 0.0f) q -= 1;
  return static_cast<uint8_t>(q);
}

template <class Map>
HD uint8_t blockwise_quantize_unsigned(float x, float absmax, const Map& map) {
  if (!(absmax > 0.0f)) return static_cast<uint8_t>(kUnsignedMapZero);
  return dynamic_map_quantize(rn::div(x, absmax), map);
}

}  // namespace kmath
