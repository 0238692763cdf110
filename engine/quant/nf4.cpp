// NF4 quantize / dequantize on the CPU: block loops around the shared math in
// kernels/math/nf4.h (x * (1/absmax) -> nearest code; code * absmax back; the nested 8-bit
// absmax with the dynamic map). See engine/quant/nf4.h for the format.
#include "engine/quant/nf4.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "kernels/math/nf4.h"

namespace engine::quant {

static_assert(kNf4Block == kmath::kNf4Block && kNestedBlock == kmath::kNestedBlock);

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

const std::array<float, kmath::kDynamicMapSize>& dynamic_map() {
  static const auto map = [] {
    std::array<float, kmath::kDynamicMapSize> m{};
    for (int i = 0; i < kmath::kDynamicMapSize; ++i) m[i] = kmath::dynamic_map_value(i);
    return m;
  }();
  return map;
}

// The per-block reference of the kernel: bitsandbytes' arithmetic, special values
// included (a NaN vanishes in the max, an Inf zeroes its block), so that the CUDA
// quantizer can be compared with it on them. quantize_nf4 refuses them up front.
float block_absmax(const float* x, int64_t n) {
  float a = 0.0f;
  for (int64_t i = 0; i < n; ++i) a = std::max(a, std::fabs(x[i]));
  return a;
}

Tensor f32_on_cpu(const Tensor& w) {
  Tensor t = w.device().is_cpu() ? w : w.to(Device::cpu());
  return t.dtype() == DType::F32 ? t : t.to_dtype(DType::F32);
}

}  // namespace

size_t Nf4Weight::nbytes() const {
  size_t n = packed.nbytes();
  if (double_quant) return n + absmax_q.nbytes() + nested_absmax.nbytes() + sizeof(float);
  return n + absmax.nbytes();
}

void quantize_nf4_blocks(const float* x, int64_t n, uint8_t* packed, float* absmax) {
  for (int64_t b = 0; b < ceil_div(n, kNf4Block); ++b) {
    const int64_t begin = b * kNf4Block, len = std::min(kNf4Block, n - begin);
    absmax[b] = block_absmax(x + begin, len);
    const float inv = kmath::nf4_inverse_scale(absmax[b]);
    // Blocks have an even length except the last, so pairs never straddle two blocks.
    for (int64_t i = 0; i < len; i += 2) {
      const uint8_t hi = kmath::nf4_quantize(x[begin + i], inv);
      const uint8_t lo = i + 1 < len ? kmath::nf4_quantize(x[begin + i + 1], inv)
                                     : static_cast<uint8_t>(kmath::kNf4ZeroNibble);
      packed[(begin + i) / 2] = kmath::nf4_pack(hi, lo);
    }
  }
}

void dequantize_nf4_blocks(const uint8_t* packed, const float* absmax, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = kmath::nf4_dequantize(kmath::nf4_nibble(packed, i), absmax[i / kNf4Block]);
}

float absmax_offset(const float* absmax, int64_t n) {
  ENGINE_CHECK(n > 0, "absmax_offset of an empty vector");
  double sum = 0.0;  // order-independent to well below fp32 rounding for any real n
  for (int64_t i = 0; i < n; ++i) sum += absmax[i];
  return static_cast<float>(sum / static_cast<double>(n));
}

void quantize_absmax_nested(const float* absmax, int64_t n, float offset, uint8_t* q,
                            float* nested) {
  const float* map = dynamic_map().data();
  for (int64_t b = 0; b < ceil_div(n, kNestedBlock); ++b) {
    const int64_t begin = b * kNestedBlock, len = std::min(kNestedBlock, n - begin);
    float c = 0.0f;
    for (int64_t i = 0; i < len; ++i) c = std::max(c, std::fabs(absmax[begin + i] - offset));
    nested[b] = c;
    // As bnb's CUDA kernel: no guard, a zero block gives NaN -> index 0, and
    // map[0] * 0 + offset is exactly the offset again.
    const float inv = 1.0f / c;
    for (int64_t i = 0; i < len; ++i)
      q[begin + i] = kmath::dynamic_map_quantize((absmax[begin + i] - offset) * inv, map);
  }
}

void dequantize_absmax_nested(const uint8_t* q, const float* nested, int64_t n, float offset,
                              float* out, const float* map) {
  if (map == nullptr) map = dynamic_map().data();
  for (int64_t i = 0; i < n; ++i)
    out[i] = kmath::nested_dequantize(map[q[i]], nested[i / kNestedBlock], offset);
}

Nf4Weight quantize_nf4(const Tensor& w, bool double_quant) {
  ENGINE_CHECK(w.dtype() == DType::F32 || w.dtype() == DType::BF16 || w.dtype() == DType::F16,
               "quantize_nf4 needs a float tensor, got ", w.str());
  ENGINE_CHECK(w.numel() > 0, "quantize_nf4 of an empty tensor ", w.str());
  const Tensor x = f32_on_cpu(w);
  const float* values = x.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i)
    ENGINE_CHECK(std::isfinite(values[i]), "quantize_nf4: non-finite value ", values[i],
                 " at flat index ", i, " of ", w.str());
  Nf4Weight q;
  q.shape = x.shape();
  q.double_quant = double_quant;
  const int64_t n = x.numel(), blocks = q.num_blocks();
  q.packed = Tensor::empty({ceil_div(n, 2)}, DType::U8);
  Tensor absmax = Tensor::empty({blocks}, DType::F32);
  quantize_nf4_blocks(x.data<float>(), n, q.packed.data<uint8_t>(), absmax.data<float>());
  if (!double_quant) {
    q.absmax = absmax;
    return q;
  }
  q.offset = absmax_offset(absmax.data<float>(), blocks);
  q.absmax_q = Tensor::empty({blocks}, DType::U8);
  q.nested_absmax = Tensor::empty({ceil_div(blocks, kNestedBlock)}, DType::F32);
  quantize_absmax_nested(absmax.data<float>(), blocks, q.offset, q.absmax_q.data<uint8_t>(),
                         q.nested_absmax.data<float>());
  return q;
}

Tensor dequantized_absmax(const Nf4Weight& w) {
  if (!w.double_quant) return w.absmax.clone();
  ENGINE_CHECK(w.absmax_q.numel() == w.num_blocks() &&
                   w.nested_absmax.numel() == ceil_div(w.num_blocks(), kNestedBlock),
               "NF4 statistics do not fit shape ", w.shape.str());
  Tensor out = Tensor::empty({w.num_blocks()}, DType::F32);
  dequantize_absmax_nested(w.absmax_q.data<uint8_t>(), w.nested_absmax.data<float>(),
                           w.num_blocks(), w.offset, out.data<float>());
  return out;
}

Tensor dequantize_nf4(const Nf4Weight& w) {
  ENGINE_CHECK(w.packed.numel() == ceil_div(w.numel(), 2), "NF4 packed data of ",
               w.packed.numel(), " bytes does not fit shape ", w.shape.str());
  const Tensor absmax = dequantized_absmax(w);
  ENGINE_CHECK(absmax.numel() == w.num_blocks(), "NF4 absmax does not fit shape ",
               w.shape.str());
  Tensor out = Tensor::empty(w.shape, DType::F32);
  dequantize_nf4_blocks(w.packed.data<uint8_t>(), absmax.data<float>(), w.numel(),
                        out.data<float>());
  return out;
}

}  // namespace engine::quant
