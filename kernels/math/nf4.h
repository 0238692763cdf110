// NF4 (bitsandbytes 4-bit "nf4") and its double quantization: the per-element and per-block
// math shared by the CPU reference (engine/quant) and the CUDA kernels.
//
// A weight is flattened row-major and cut into blocks of kNf4Block = 64 values (the last one
// may be short). For block b with absmax_b = max |x|:
//   scaled   = x * (1 / absmax_b)                      (reciprocal, then multiply: as bnb)
//   nibble   = nearest NF4 code to `scaled`: scaled > midpoint(k, k+1) moves above code k,
//              so a value exactly on a midpoint takes the LOWER code
//   x'       = nf4_code(nibble) * absmax_b             (fp32)
// Two nibbles per byte: element 2j in the high nibble, 2j+1 in the low one; an odd count
// pads the last low nibble with the code of 0.0 (nibble 7), as bnb's zero-filled loads do.
//
// Double quantization ("nested", QLoRA's default) stores absmax in 8 bits:
//   offset   = mean(absmax)                            (fp32)
//   v        = absmax - offset, cut into blocks of kNestedBlock = 256, nested_c = max |v|
//   q        = dynamic-map entry nearest to v * (1 / nested_c)   (dynamic_map_quantize)
//   absmax'  = dynamic_map_value(q) * nested_c + offset          (two roundings, no FMA)
//
// Where the two bitsandbytes implementations disagree, this follows the CUDA kernels
// (kQuantizeBlockwise with dQuantizeNF4 / dQuantize), with one exception: an all-zero block
// (absmax 0). CUDA computes 0 * (1/0) = NaN and writes nibble 0 (code -1.0), which
// dequantizes to -absmax' != 0 once absmax is double-quantized; bnb's CPU backend takes the
// reciprocal of max(absmax, 1e-38), writes nibble 7 (code 0.0) and dequantizes to exactly 0.
// We do the latter (nf4_inverse_scale). For the nested 8-bit step CUDA's own behaviour is
// kept: a zero nested block quantizes to index 0 and dequantizes to exactly `offset`.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/math/hd.h"

namespace kmath {

constexpr int kNf4Block = 64;       // values per absmax
constexpr int kNestedBlock = 256;   // absmax values per nested absmax
constexpr int kNf4Codes = 16;
constexpr int kDynamicMapSize = 256;
constexpr int kNf4ZeroNibble = 7;   // nf4_code(7) == 0.0f

// The NF4 code table, index = 4-bit value (bnb's get_4bit_type("nf4"), as fp32). A switch
// rather than a namespace-scope array so that it is usable from device code without a
// __constant__ copy; kernels stage it in shared memory or registers.
HD float nf4_code(int idx) {
  switch (idx & 15) {
    case 0: return -1.0f;
    case 1: return -0.6961928009986877f;
    case 2: return -0.5250730514526367f;
    case 3: return -0.39491748809814453f;
    case 4: return -0.28444138169288635f;
    case 5: return -0.18477343022823334f;
    case 6: return -0.09105003625154495f;
    case 7: return 0.0f;
    case 8: return 0.07958029955625534f;
    case 9: return 0.16093020141124725f;
    case 10: return 0.24611230194568634f;
    case 11: return 0.33791524171829224f;
    case 12: return 0.44070982933044434f;
    case 13: return 0.5626170039176941f;
    case 14: return 0.7229568362236023f;
    default: return 1.0f;
  }
}

// Threshold between codes k and k+1 (k = 0..14): the literals of bnb's dQuantizeNF4 tree,
// rounded straight from decimal to fp32 as nvcc does. Four of them (k = 0, 8, 12, 14) sit one
// ulp from the fp32 mean (code[k] + code[k+1]) / 2 that bnb's CPU backend compares against;
// the CUDA kernel, and so this, uses the literals.
HD float nf4_midpoint(int k) {
  switch (k) {
    case 0: return -0.8480964004993439f;
    case 1: return -0.6106329262256622f;
    case 2: return -0.4599952697753906f;
    case 3: return -0.33967943489551544f;
    case 4: return -0.23460740596055984f;
    case 5: return -0.13791173323988914f;
    case 6: return -0.045525018125772476f;
    case 7: return 0.03979014977812767f;
    case 8: return 0.1202552504837513f;
    case 9: return 0.2035212516784668f;
    case 10: return 0.2920137718319893f;
    case 11: return 0.3893125355243683f;
    case 12: return 0.5016634166240692f;
    case 13: return 0.6427869200706482f;
    default: return 0.8614784181118011f;
  }
}

// Nearest code to a value already scaled into [-1, 1]. The same four comparisons as bnb's
// decision tree, written as a branch-free descent: `>` sends exact midpoints to the lower
// code, and NaN (which compares false) ends at nibble 0 exactly as in bnb.
HD uint8_t nf4_quantize_value(float scaled) {
  int q = 0;
  q += scaled > nf4_midpoint(7) ? 8 : 0;
  q += scaled > nf4_midpoint(q + 3) ? 4 : 0;
  q += scaled > nf4_midpoint(q + 1) ? 2 : 0;
  q += scaled > nf4_midpoint(q) ? 1 : 0;
  return static_cast<uint8_t>(q);
}

// The factor a block's values are multiplied by. max(absmax, 1e-38) keeps an all-zero block
// finite (0 * 1e38 = 0 -> nibble 7), following bnb's CPU backend; see the header.
HD float nf4_inverse_scale(float absmax) { return 1.0f / fmaxf(absmax, 1e-38f); }

HD uint8_t nf4_quantize(float x, float inverse_scale) {
  return nf4_quantize_value(x * inverse_scale);
}

HD float nf4_dequantize(uint8_t nibble, float absmax) { return nf4_code(nibble) * absmax; }

// Packing: element 2j -> high nibble of byte j, element 2j+1 -> low nibble.
HD uint8_t nf4_pack(uint8_t even, uint8_t odd) {
  return static_cast<uint8_t>(((even & 15u) << 4) | (odd & 15u));
}
HD uint8_t nf4_high(uint8_t byte) { return static_cast<uint8_t>(byte >> 4); }
HD uint8_t nf4_low(uint8_t byte) { return static_cast<uint8_t>(byte & 15u); }
// Nibble of flat element i.
HD uint8_t nf4_nibble(const uint8_t* packed, int64_t i) {
  uint8_t byte = packed[i >> 1];
  return (i & 1) ? nf4_low(byte) : nf4_high(byte);
}

// ---------------------------------------------------------------------------------------
// The signed dynamic map (bnb create_dynamic_map(signed=True), 256 fp32 values, sorted).
// For g = 0..6: the 2^g midpoints of linspace(0.1, 1, 2^g + 1), times 10^(g-6), and their
// negatives; plus 0 and 1.0. Sorted, the 127 negatives fill indices 0..126 (index 0 is
// -0.99296875), 0 is index 127, the positives 128..254 and 1.0 is index 255. The groups do
// not overlap (group g lies in (10^(g-7), 10^(g-6))), so positive number p = 0..126 in
// ascending order is entry j = p + 1 - 2^g of group g = floor(log2(p + 1)).
//
// Bit-exact with torch's float32 arithmetic on x86 (AVX2/AVX512), where linspace evaluates
// start + step*k (first half) and end - step*(steps-1-k) (second half) as fused
// multiply-adds; a torch built without SIMD rounds those separately and lands 1-2 ulp away
// in 42 entries. Checkpoints carry their own map (nested_quant_map); this is the one bnb
// writes on x86.

// One point of torch.linspace(0.1f, 1.0f, steps) in float32.
HD float dynamic_map_linspace(int k, int steps) {
  const float start = 0.1f, end = 1.0f;
  const float step = (end - start) / static_cast<float>(steps - 1);
  if (k < steps / 2) return fmaf(step, static_cast<float>(k), start);
  return fmaf(-step, static_cast<float>(steps - 1 - k), end);
}

HD float dynamic_map_value(int i) {
  if (i == 127) return 0.0f;
  if (i >= 255) return 1.0f;
  const int p = i > 127 ? i - 128 : 126 - i;  // rank among the positive magnitudes
  int g = 0;
  while ((2 << g) <= p + 1) ++g;  // 2^g <= p + 1 < 2^(g+1)
  const int j = p + 1 - (1 << g);
  const int steps = (1 << g) + 1;
  const float mean = (dynamic_map_linspace(j, steps) + dynamic_map_linspace(j + 1, steps)) / 2.0f;
  // 10^(g-6) as torch sees the Python scalar: rounded to float32 (g = 6 is the integer 1).
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
  const float v = scale * mean;
  return i > 127 ? v : -v;
}

// Nearest map entry to x (x already scaled into [-1, 1]): bnb's dQuantize<0> from
// kernels.cu, step for step, so that CPU and GPU agree with bnb to the bit. A 7-step binary
// search ends on an even index `pivot` with neighbours lower_pivot < pivot < upper_pivot;
// the midpoint to the neighbour on x's side, (a + b) * 0.5f in fp32, decides. Exact ties
// therefore go to the even index (to the lower entry when x lies above code[pivot], to the
// upper one when below), and NaN ends at index 0. `code` is anything indexable by int
// returning float: a float pointer (a shared-memory copy in kernels) or DynamicMap below.
template <class Code>
HD uint8_t dynamic_map_quantize(float x, const Code& code) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  // bnb seeds the bounds with +-1.0; at the ends of the map it uses the real entries.
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) {
    const float midpoint = (upper + val) * 0.5f;
    return static_cast<uint8_t>(x > midpoint ? upper_pivot : pivot);
  }
  const float midpoint = (lower + val) * 0.5f;
  return static_cast<uint8_t>(x < midpoint ? lower_pivot : pivot);
}

// The map computed on the fly, for code without a table at hand (8 entries per lookup).
struct DynamicMap {
  HD float operator[](int i) const { return dynamic_map_value(i); }
};

HD uint8_t dynamic_map_quantize(float x) { return dynamic_map_quantize(x, DynamicMap{}); }

// absmax' = map[q] * nested + offset, as two separately rounded operations (bnb runs them as
// two kernels). Under nvcc the intrinsics stop the compiler from contracting them to an FMA.
HD float nested_dequantize(float map_value, float nested_absmax, float offset) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(map_value, nested_absmax), offset);
#else
  const float scaled = map_value * nested_absmax;
  return scaled + offset;
#endif
}

}  // namespace kmath
