// NF4 quantization of frozen base weights, bit-compatible with bitsandbytes
// (quantize_4bit(quant_type="nf4", blocksize=64, compress_statistics=double_quant)).
//
// Math (per-element and per-block functions in kernels/math/nf4.h, shared with CUDA):
//   blocks of 64 values of the row-major flattened weight, absmax_b = max |x|;
//   nibble = nearest NF4 code to x * (1/absmax_b) (midpoints go to the lower code);
//   two nibbles per byte, element 2j in the high nibble;
//   double quantization: offset = mean(absmax), absmax - offset in blocks of 256 quantized to
//   8 bits with the signed dynamic map, one fp32 nested absmax per 256-block;
//   dequantize: code[nibble] * absmax', absmax' = map[q] * nested + offset (fp32).
// Storage: 4 bits + 8/64 + 32/(64*256) bits per value, about 4.127 (double-quantized).
//
// Differences from bitsandbytes, both deliberate and documented in kernels/math/nf4.h:
// an all-zero block is written as code 0.0 (dequantizes to exactly 0; bnb's CUDA kernel
// writes code -1.0 from a NaN), and the offset is the mean accumulated in double and rounded
// once to fp32, whereas torch's float32 reductions (whose order differs between its CPU and
// CUDA kernels) may land 1 ulp away. Everything downstream of the offset is bit-identical.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace engine::quant {

constexpr int64_t kNf4Block = 64;
constexpr int64_t kNestedBlock = 256;

struct Nf4Weight {
  Shape shape;                // the original weight's shape
  Tensor packed;              // u8 [ceil(numel / 2)], element 2j in the high nibble
  bool double_quant = true;
  Tensor absmax_q;            // u8 [num_blocks], dynamic-map codes   (double_quant)
  Tensor nested_absmax;       // f32 [ceil(num_blocks / 256)]         (double_quant)
  float offset = 0.0f;        // mean of the fp32 absmax              (double_quant)
  Tensor absmax;              // f32 [num_blocks]                     (!double_quant)

  int64_t numel() const { return shape.numel(); }
  int64_t num_blocks() const { return (numel() + kNf4Block - 1) / kNf4Block; }
  // Bytes of quantized storage: packed values plus statistics.
  size_t nbytes() const;
};

// Quantizes a CPU tensor of any float dtype (bf16/f16 values are exact in f32, so the result
// equals bnb's quantization of the bf16 weight).
Nf4Weight quantize_nf4(const Tensor& w, bool double_quant = true);

// The f32 weight the NF4 one stands for, with w.shape.
Tensor dequantize_nf4(const Nf4Weight& w);

// The fp32 per-block scales used by dequantization (absmax' when double-quantized), f32
// [num_blocks].
Tensor dequantized_absmax(const Nf4Weight& w);

// ---- Raw building blocks, over contiguous host arrays (the streaming quantizing loader and
// the tests use them directly).

// n values -> packed [ceil(n/2)] and absmax [ceil(n/64)].
void quantize_nf4_blocks(const float* x, int64_t n, uint8_t* packed, float* absmax);
// out[i] = code[nibble_i] * absmax[i / 64].
void dequantize_nf4_blocks(const uint8_t* packed, const float* absmax, int64_t n, float* out);

// mean(absmax) accumulated in double, rounded once.
float absmax_offset(const float* absmax, int64_t n);
// absmax - offset -> q [n] and nested [ceil(n/256)].
void quantize_absmax_nested(const float* absmax, int64_t n, float offset, uint8_t* q,
                            float* nested);
// out[i] = map[q[i]] * nested[i / 256] + offset. `map` defaults to the builtin dynamic map;
// pass a checkpoint's nested_quant_map to dequantize it exactly as it was written.
void dequantize_absmax_nested(const uint8_t* q, const float* nested, int64_t n, float offset,
                              float* out, const float* map = nullptr);

}  // namespace engine::quant
