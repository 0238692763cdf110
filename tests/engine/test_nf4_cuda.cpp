// The NF4 kernels (kernels/nf4.cu) against the CPU reference (engine/quant/nf4.cpp) on fresh
// random inputs, every output poisoned before the kernel writes it:
//   quantize      bit-identical: packed bytes, absmax, offset, absmax codes, nested absmax
//                 (f32 and bf16 input, sizes off the 64/256 grid, zero blocks, both offset paths);
//   dequantize    bitwise equal to the CPU's fp32 dequantize rounded to bf16 (or kept f32):
//                 both compute code * absmax' in fp32 with the same roundings;
//   matmul        within a derived bound of a double-precision reference (below);
//   Nf4FrozenLinear on CUDA: quantize_on_device, dequantize, matmul_direct.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/cuda/runtime.h"
#include "engine/quant/nf4.h"
#include "engine/quant/nf4_linear.h"
#include "engine/tensor.h"
#include "kernels/check.h"
#include "kernels/math/bf16.h"
#include "kernels/nf4.h"
#include "kernels/nf4_layout.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"

namespace {

using engine::Device;
using engine::DType;
using engine::Tensor;
namespace quant = engine::quant;
namespace nf4 = kernels::nf4;

const Device kGpu = Device::cuda(0);

cudaStream_t stream() { return engine::cuda::current_stream(); }

uint32_t bits(float f) { return kmath::float_to_bits(f); }

// Weights with structure: normal values, per-block scales spread over 2^-6 .. 2^3, outliers,
// and (optionally) all-zero blocks, so that absmax and its nested quantization vary.
std::vector<float> weights(int64_t n, uint32_t seed, bool zero_blocks = true) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exp(-6, 3);
  std::vector<float> x(static_cast<size_t>(n));
  float scale = 1.0f;
  for (int64_t i = 0; i < n; ++i) {
    if (i % 64 == 0) scale = std::ldexp(1.0f, exp(gen)) * (1.0f + 0.01f * static_cast<float>(i % 97));
    x[static_cast<size_t>(i)] = normal(gen) * scale;
    if (i % 1013 == 5) x[static_cast<size_t>(i)] *= 30.0f;  // outliers
  }
  if (zero_blocks && n > 192)
    for (int64_t i = 64; i < 128; ++i) x[static_cast<size_t>(i)] = 0.0f;
  return x;
}

template <class T>
std::vector<T> host(const Tensor& t) {
  const Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  const T* p = h.data<T>();
  return std::vector<T>(p, p + h.numel());
}

template <class T>
Tensor upload(const std::vector<T>& v, DType dtype) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, dtype);
  std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(T));
  return t.to(kGpu);
}

// A device buffer filled with a poison pattern (NaN for floats, 0xAB for bytes).
Tensor poisoned(int64_t n, DType dtype) {
  const float poison = dtype == DType::U8 ? 171.0f : NAN;
  return Tensor::full({n}, poison, dtype, kGpu);
}

using testing_support::expect_bitwise;

struct CpuQuant {
  std::vector<uint8_t> packed, absmax_q;
  std::vector<float> absmax, nested;
  float offset = 0;
};

CpuQuant cpu_quantize(const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size()), blocks = (n + 63) / 64;
  CpuQuant q;
  q.packed.resize(static_cast<size_t>((n + 1) / 2));
  q.absmax.resize(static_cast<size_t>(blocks));
  quant::quantize_nf4_blocks(x.data(), n, q.packed.data(), q.absmax.data());
  q.offset = quant::absmax_offset(q.absmax.data(), blocks);
  q.absmax_q.resize(static_cast<size_t>(blocks));
  q.nested.resize(static_cast<size_t>((blocks + 255) / 256));
  quant::quantize_absmax_nested(q.absmax.data(), blocks, q.offset, q.absmax_q.data(), q.nested.data());
  return q;
}

// Runs both kernels on device input x (f32 or bf16) and compares every output with `want`.
void expect_device_quantize_equals(const Tensor& x_dev, kernels::ElemType type, const CpuQuant& want) {
  const int64_t n = x_dev.numel(), blocks = (n + 63) / 64;
  Tensor packed = poisoned((n + 1) / 2, DType::U8), absmax = poisoned(blocks, DType::F32);
  kernels::nf4_quantize(x_dev.raw_data(), type, n, packed.data<uint8_t>(), absmax.data<float>(), stream());
  expect_bitwise(host<uint8_t>(packed), want.packed, "packed");
  std::vector<float> got_absmax = host<float>(absmax);
  expect_bitwise(got_absmax, want.absmax, "absmax");
  for (auto sum : {kernels::Nf4OffsetSum::Auto, kernels::Nf4OffsetSum::Sequential}) {
    SCOPED_TRACE(sum == kernels::Nf4OffsetSum::Auto ? "auto offset sum" : "sequential offset sum");
    Tensor offset = poisoned(1, DType::F32), q = poisoned(blocks, DType::U8);
    Tensor nested = poisoned((blocks + 255) / 256, DType::F32);
    kernels::nf4_double_quantize(absmax.data<float>(), blocks, offset.data<float>(),
                                 q.data<uint8_t>(), nested.data<float>(), stream(), sum);
    EXPECT_EQ(bits(offset.item()), bits(want.offset)) << offset.item() << " vs " << want.offset;
    expect_bitwise(host<uint8_t>(q), want.absmax_q, "absmax_q");
    expect_bitwise(host<float>(nested), want.nested, "nested");
  }
}

const int64_t kSizes[] = {1, 2, 3, 63, 64, 65, 127, 255, 256 * 64 - 1, 256 * 64 + 1,
                          3 * 256 * 64 + 17, 1000003};

TEST(Nf4Cuda, QuantizeF32IsBitIdenticalToTheCpu) {
  SKIP_WITHOUT_GPU();
  for (int64_t n : kSizes) {
    SCOPED_TRACE(testing::Message() << "n = " << n);
    const std::vector<float> x = weights(n, static_cast<uint32_t>(n));
    expect_device_quantize_equals(Tensor::from_floats(x, {n}).to(kGpu), kernels::ElemType::F32,
                                  cpu_quantize(x));
  }
}

TEST(Nf4Cuda, QuantizeBf16IsBitIdenticalToTheCpu) {
  SKIP_WITHOUT_GPU();
  for (int64_t n : kSizes) {
    SCOPED_TRACE(testing::Message() << "n = " << n);
    const Tensor bf = Tensor::from_floats(weights(n, static_cast<uint32_t>(n) + 1), {n}).to_dtype(DType::BF16);
    // bf16 values are exact in f32: the CPU quantizes the same numbers.
    expect_device_quantize_equals(bf.to(kGpu), kernels::ElemType::BF16,
                                  cpu_quantize(bf.to_dtype(DType::F32).to_floats()));
  }
}

TEST(Nf4Cuda, QuantizeSpecialBlocks) {
  SKIP_WITHOUT_GPU();
  // A block of NaNs (absmax 0 on both sides), a block with an infinity, subnormals, equal
  // absmax everywhere (a zero nested block), and all zeros.
  std::vector<float> x = weights(64 * 600, 77);
  for (int i = 0; i < 64; ++i) x[static_cast<size_t>(128 + i)] = NAN;
  for (int i = 0; i < 64; ++i) x[static_cast<size_t>(320 + i)] = 1e-40f * static_cast<float>(i);
  expect_device_quantize_equals(Tensor::from_floats(x, {64 * 600}).to(kGpu), kernels::ElemType::F32,
                                cpu_quantize(x));
  std::vector<float> flat(64 * 300, 0.25f);
  for (size_t i = 0; i < flat.size(); i += 3) flat[i] = -0.5f;
  expect_device_quantize_equals(Tensor::from_floats(flat, {64 * 300}).to(kGpu), kernels::ElemType::F32,
                                cpu_quantize(flat));
  std::vector<float> zeros(1000, 0.0f);
  expect_device_quantize_equals(Tensor::from_floats(zeros, {1000}).to(kGpu), kernels::ElemType::F32,
                                cpu_quantize(zeros));
  std::vector<float> inf = weights(64 * 5, 3);
  inf[70] = INFINITY;
  expect_device_quantize_equals(Tensor::from_floats(inf, {64 * 5}).to(kGpu), kernels::ElemType::F32,
                                cpu_quantize(inf));
}

// The offset on its own, on absmax vectors built for it: a wide exponent range (the
// parallel sum is not exact, the kernel must fall back to index order) and realistic ones.
TEST(Nf4Cuda, OffsetEqualsTheCpuOnBothPaths) {
  SKIP_WITHOUT_GPU();
  std::vector<std::vector<float>> cases;
  std::vector<float> ties(2048, std::ldexp(1.0f, -53));  // index order keeps 1.0 exactly
  ties[0] = 1.0f;
  cases.push_back(ties);
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> e(-60.0f, 10.0f), narrow(-4.0f, 0.0f);
  for (int64_t n : {1, 1023, 1025, 100000, 3000001}) {
    std::vector<float> wide(static_cast<size_t>(n)), real(static_cast<size_t>(n));
    for (auto& v : wide) v = std::exp2(e(gen));
    for (auto& v : real) v = 0.03f * std::exp2(narrow(gen));
    cases.push_back(wide);
    cases.push_back(real);
  }
  for (size_t c = 0; c < cases.size(); ++c) {
    SCOPED_TRACE(testing::Message() << "case " << c << ", " << cases[c].size() << " values");
    const std::vector<float>& a = cases[c];
    const int64_t blocks = static_cast<int64_t>(a.size());
    const float want = quant::absmax_offset(a.data(), blocks);
    std::vector<uint8_t> want_q(a.size());
    std::vector<float> want_nested(static_cast<size_t>((blocks + 255) / 256));
    quant::quantize_absmax_nested(a.data(), blocks, want, want_q.data(), want_nested.data());
    const Tensor absmax = upload(a, DType::F32);
    for (auto sum : {kernels::Nf4OffsetSum::Auto, kernels::Nf4OffsetSum::Sequential}) {
      Tensor offset = poisoned(1, DType::F32), q = poisoned(blocks, DType::U8);
      Tensor nested = poisoned((blocks + 255) / 256, DType::F32);
      kernels::nf4_double_quantize(absmax.data<float>(), blocks, offset.data<float>(),
                                   q.data<uint8_t>(), nested.data<float>(), stream(), sum);
      EXPECT_EQ(bits(offset.item()), bits(want)) << offset.item() << " vs " << want;
      expect_bitwise(host<uint8_t>(q), want_q, "absmax_q");
      expect_bitwise(host<float>(nested), want_nested, "nested");
    }
  }
}

// ---- dequantize ------------------------------------------------------------------------

struct Uploaded {
  quant::Nf4Weight cpu;
  Tensor packed, absmax_q, nested, absmax;
  kernels::Nf4Scales scales() const {
    kernels::Nf4Scales s;
    if (cpu.double_quant) {
      s.absmax_q = absmax_q.data<uint8_t>();
      s.nested = nested.data<float>();
      s.offset = cpu.offset;
    } else {
      s.absmax = absmax.data<float>();
    }
    return s;
  }
};

Uploaded quantize_and_upload(const std::vector<float>& x, int64_t rows, int64_t cols, bool dq) {
  Uploaded u;
  u.cpu = quant::quantize_nf4(Tensor::from_floats(x, {rows, cols}), dq);
  u.packed = u.cpu.packed.to(kGpu);
  if (dq) {
    u.absmax_q = u.cpu.absmax_q.to(kGpu);
    u.nested = u.cpu.nested_absmax.to(kGpu);
  } else {
    u.absmax = u.cpu.absmax.to(kGpu);
  }
  return u;
}

TEST(Nf4Cuda, DequantizeEqualsTheCpuBitwise) {
  SKIP_WITHOUT_GPU();
  for (int64_t n : {int64_t{1}, int64_t{5}, int64_t{1023}, int64_t{1024}, int64_t{1025},
                    int64_t{4096 + 333}, int64_t{7 * 3 * 1024 + 1}, int64_t{1000003}}) {
    for (bool dq : {true, false}) {
      SCOPED_TRACE(testing::Message() << "n = " << n << (dq ? " double-quantized" : " plain"));
      const Uploaded u = quantize_and_upload(weights(n, static_cast<uint32_t>(n) + 9), 1, n, dq);
      const std::vector<float> ref = quant::dequantize_nf4(u.cpu).to_floats();
      std::vector<uint16_t> ref_bf16(ref.size());
      for (size_t i = 0; i < ref.size(); ++i) ref_bf16[i] = kmath::float_to_bf16_bits(ref[i]);

      Tensor out32 = poisoned(n, DType::F32), out16 = poisoned(n, DType::BF16);
      kernels::nf4_dequantize(out32.raw_data(), kernels::ElemType::F32, u.packed.data<uint8_t>(),
                              u.scales(), n, stream());
      kernels::nf4_dequantize(out16.raw_data(), kernels::ElemType::BF16, u.packed.data<uint8_t>(),
                              u.scales(), n, stream());
      expect_bitwise(host<float>(out32), ref, "f32 out");
      expect_bitwise(host<uint16_t>(out16), ref_bf16, "bf16 out");

      // Pointers off the 16-byte grid take the scalar path: same bits.
      Tensor wide = poisoned(n + 8, DType::BF16);
      void* shifted = static_cast<uint16_t*>(wide.raw_data()) + 1;
      Tensor packed_shifted = poisoned(u.packed.numel() + 16, DType::U8);
      CUDA_CHECK(cudaMemcpyAsync(packed_shifted.data<uint8_t>() + 3, u.packed.raw_data(),
                                 static_cast<size_t>(u.packed.numel()), cudaMemcpyDeviceToDevice, stream()));
      kernels::nf4_dequantize(shifted, kernels::ElemType::BF16, packed_shifted.data<uint8_t>() + 3,
                              u.scales(), n, stream());
      std::vector<uint16_t> got = host<uint16_t>(wide);
      EXPECT_TRUE(std::isnan(kmath::bf16_bits_to_float(got.front()))) << "wrote before the output";
      EXPECT_TRUE(std::isnan(kmath::bf16_bits_to_float(got[static_cast<size_t>(n + 1)]))) << "wrote past it";
      expect_bitwise(std::vector<uint16_t>(got.begin() + 1, got.begin() + 1 + n), ref_bf16, "unaligned");
    }
  }
}

// ---- matmul_small_m --------------------------------------------------------------------
//
// Reference: s = sum_k x[i,k] w[j,k] in double, with x the bf16 input and w = bf16(W'), the
// CPU-dequantized weight rounded to bf16 (the kernel feeds bf16 W to the tensor cores, as the
// dense path dequantizes to bf16 before its GEMM). Bound: each product of two bf16 is exact in
// fp32 (8 + 8 significant bits); the kernel's fp32 sum takes at most K - 1 + (splits - 1)
// additions along any path, each with relative error at most 2u, u = 2^-24 (2u rather than u
// because tensor-core accumulation is not specified to round to nearest), so
// |s' - s| <= (K + splits) 2^-23 sum_k |x w|; the output rounds s' to bf16: |y - s'| <= 2^-8 |s'|.
// Together: |y - s| <= 2^-8 |s| + (1 + 2^-8) (K + 32) 2^-23 sum_k |x w|   (splits <= 32).
void expect_matmul_close(const std::vector<uint16_t>& y, const std::vector<uint16_t>& x,
                         const std::vector<float>& w_deq, int64_t m, int64_t n, int64_t k) {
  const double accum = (1.0 + std::ldexp(1.0, -8)) * static_cast<double>(k + nf4::kMaxSplits) *
                       std::ldexp(1.0, -23);
  std::vector<float> got;
  std::vector<double> ref, tol;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0, mag = 0;
      for (int64_t kk = 0; kk < k; ++kk) {
        const double p = static_cast<double>(kmath::bf16_bits_to_float(x[static_cast<size_t>(i * k + kk)])) *
                         kmath::round_to_bf16(w_deq[static_cast<size_t>(j * k + kk)]);
        s += p;
        mag += std::fabs(p);
      }
      got.push_back(kmath::bf16_bits_to_float(y[static_cast<size_t>(i * n + j)]));
      ref.push_back(s);
      tol.push_back(std::ldexp(std::fabs(s), -8) + accum * mag);
    }
  testing_support::expect_within(got, ref, tol, "y (row-major [m, n])");
}

std::vector<uint16_t> random_bf16(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> v(static_cast<size_t>(n));
  for (auto& e : v) e = kmath::float_to_bf16_bits(normal(gen));
  return v;
}

std::vector<uint16_t> run_matmul(const Uploaded& u, const void* x_ptr, int64_t m, int64_t n,
                                 int64_t k) {
  Tensor y = poisoned(m * n, DType::BF16);
  const size_t ws_bytes = kernels::nf4_matmul_small_m_workspace_bytes(m, n, k);
  Tensor ws = ws_bytes ? poisoned(static_cast<int64_t>(ws_bytes), DType::U8) : Tensor();
  kernels::nf4_matmul_small_m(y.raw_data(), x_ptr, u.packed.data<uint8_t>(), u.scales(), m, n, k,
                              ws.defined() ? ws.raw_data() : nullptr, ws_bytes, stream());
  return host<uint16_t>(y);
}

struct MatmulShape {
  int64_t n, k;
};

TEST(Nf4Cuda, MatmulSmallMMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  // Tensor-core path (K % 128 == 0): one split, odd N, several splits; generic path: odd K,
  // K not a multiple of 128.
  const MatmulShape shapes[] = {{72, 128}, {37, 384}, {200, 1024}, {45, 77}, {13, 200}, {9, 64}};
  for (const MatmulShape& s : shapes)
    for (bool dq : {true, false}) {
      const Uploaded u = quantize_and_upload(weights(s.n * s.k, static_cast<uint32_t>(s.n * 31 + s.k)),
                                             s.n, s.k, dq);
      const std::vector<float> w_deq = quant::dequantize_nf4(u.cpu).to_floats();
      for (int64_t m : {1, 7, 16, 33, 64}) {
        SCOPED_TRACE(testing::Message() << "m " << m << " n " << s.n << " k " << s.k
                                        << (dq ? " double-quantized" : " plain") << ", "
                                        << (nf4::matmul_plan(m, s.n, s.k, true).tensor_cores ? "tensor cores" : "generic"));
        const std::vector<uint16_t> x = random_bf16(m * s.k, static_cast<uint32_t>(m + s.k));
        const Tensor x_dev = upload(x, DType::BF16);
        const std::vector<uint16_t> y = run_matmul(u, x_dev.raw_data(), m, s.n, s.k);
        expect_matmul_close(y, x, w_deq, m, s.n, s.k);
        // Deterministic: a second run gives the same bits.
        expect_bitwise(run_matmul(u, x_dev.raw_data(), m, s.n, s.k), y, "second run");
      }
    }
}

TEST(Nf4Cuda, MatmulSmallMWithUnalignedXTakesTheGenericPath) {
  SKIP_WITHOUT_GPU();
  const int64_t m = 5, n = 24, k = 256;
  const Uploaded u = quantize_and_upload(weights(n * k, 4), n, k, true);
  const std::vector<uint16_t> x = random_bf16(m * k, 8);
  std::vector<uint16_t> padded(x.size() + 1, 0);
  std::copy(x.begin(), x.end(), padded.begin() + 1);
  const Tensor x_dev = upload(padded, DType::BF16);
  const std::vector<uint16_t> y =
      run_matmul(u, static_cast<const uint16_t*>(x_dev.raw_data()) + 1, m, n, k);
  expect_matmul_close(y, x, quant::dequantize_nf4(u.cpu).to_floats(), m, n, k);
}

TEST(Nf4Cuda, MatmulSmallMEdgeCasesAndPreconditions) {
  SKIP_WITHOUT_GPU();
  const Uploaded u = quantize_and_upload(weights(16 * 128, 2), 16, 128, true);
  Tensor x = Tensor::zeros({65 * 128}, DType::BF16, kGpu);
  Tensor y = poisoned(65 * 16, DType::BF16);
  EXPECT_THROW(kernels::nf4_matmul_small_m(y.raw_data(), x.raw_data(), u.packed.data<uint8_t>(),
                                           u.scales(), 65, 16, 128, nullptr, 0, stream()),
               engine::Error);
  EXPECT_THROW(kernels::nf4_matmul_small_m(y.raw_data(), nullptr, u.packed.data<uint8_t>(),
                                           u.scales(), 4, 16, 128, nullptr, 0, stream()),
               engine::Error);
  EXPECT_THROW(kernels::nf4_matmul_small_m(y.raw_data(), x.raw_data(), u.packed.data<uint8_t>(),
                                           kernels::Nf4Scales{}, 4, 16, 128, nullptr, 0, stream()),
               engine::Error);
  // A shape that splits K needs its workspace.
  const int64_t big_k = 128 * 64;
  ASSERT_GT(kernels::nf4_matmul_small_m_workspace_bytes(4, 16, big_k), 0u);
  EXPECT_THROW(kernels::nf4_matmul_small_m(y.raw_data(), x.raw_data(), u.packed.data<uint8_t>(),
                                           u.scales(), 4, 16, big_k, nullptr, 0, stream()),
               engine::Error);
  EXPECT_THROW(kernels::nf4_dequantize(y.raw_data(), kernels::ElemType::F16, u.packed.data<uint8_t>(),
                                       u.scales(), 16, stream()),
               engine::Error);
  // K = 0: an empty sum.
  kernels::nf4_matmul_small_m(y.raw_data(), x.raw_data(), u.packed.data<uint8_t>(), u.scales(), 3,
                              5, 0, nullptr, 0, stream());
  const std::vector<uint16_t> got = host<uint16_t>(y);
  for (int i = 0; i < 15; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], 0) << i;
  EXPECT_TRUE(std::isnan(kmath::bf16_bits_to_float(got[15])));
  // M = 0 queues nothing.
  kernels::nf4_matmul_small_m(y.raw_data(), x.raw_data(), u.packed.data<uint8_t>(), u.scales(), 0,
                              16, 128, nullptr, 0, stream());
}

// ---- Nf4FrozenLinear on CUDA -----------------------------------------------------------

TEST(Nf4Cuda, FrozenLinearQuantizeOnDeviceEqualsTheCpu) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : {DType::F32, DType::BF16, DType::F16})
    for (bool dq : {true, false}) {
      SCOPED_TRACE(testing::Message() << dtype_name(dtype) << (dq ? " double-quantized" : " plain"));
      const Tensor dense = Tensor::from_floats(weights(37 * 200, 12), {37, 200}).to_dtype(dtype);
      const auto cpu = quant::Nf4FrozenLinear::quantize(dense, dq);
      const auto gpu = quant::Nf4FrozenLinear::quantize_on_device(dense.to(kGpu), dq);
      EXPECT_TRUE(gpu->device().is_cuda());
      EXPECT_EQ(gpu->weight().shape, cpu->weight().shape);
      expect_bitwise(host<uint8_t>(gpu->weight().packed), host<uint8_t>(cpu->weight().packed), "packed");
      if (dq) {
        EXPECT_EQ(bits(gpu->weight().offset), bits(cpu->weight().offset));
        expect_bitwise(host<uint8_t>(gpu->weight().absmax_q), host<uint8_t>(cpu->weight().absmax_q), "absmax_q");
        expect_bitwise(host<float>(gpu->weight().nested_absmax), host<float>(cpu->weight().nested_absmax), "nested");
      } else {
        expect_bitwise(host<float>(gpu->weight().absmax), host<float>(cpu->weight().absmax), "absmax");
      }
      EXPECT_EQ(gpu->nbytes(), cpu->nbytes());
    }
  EXPECT_THROW(quant::Nf4FrozenLinear::quantize_on_device(Tensor::zeros({4, 64})), engine::Error);
}

TEST(Nf4Cuda, FrozenLinearDequantizeOnDeviceEqualsTheCpu) {
  SKIP_WITHOUT_GPU();
  for (bool dq : {true, false}) {
    const auto cpu = quant::Nf4FrozenLinear::quantize(Tensor::from_floats(weights(29 * 300, 6), {29, 300}), dq);
    const auto gpu = cpu->to(kGpu);
    for (DType dtype : {DType::BF16, DType::F32, DType::F16}) {
      SCOPED_TRACE(testing::Message() << dtype_name(dtype) << (dq ? " double-quantized" : " plain"));
      const Tensor want = cpu->dequantize(dtype, Device::cpu());
      const Tensor on_gpu = gpu->dequantize(dtype, kGpu);
      EXPECT_TRUE(on_gpu.device().is_cuda());
      EXPECT_EQ(on_gpu.shape(), want.shape());
      EXPECT_EQ(on_gpu.dtype(), dtype);
      const Tensor back = on_gpu.to(Device::cpu());
      EXPECT_EQ(std::memcmp(back.raw_data(), want.raw_data(), want.nbytes()), 0);
      const Tensor to_cpu = gpu->dequantize(dtype, Device::cpu());  // a CUDA weight, asked on the CPU
      EXPECT_EQ(std::memcmp(to_cpu.raw_data(), want.raw_data(), want.nbytes()), 0);
    }
  }
}

TEST(Nf4Cuda, FrozenLinearMatmulDirect) {
  SKIP_WITHOUT_GPU();
  const int64_t n = 40, k = 256;
  const auto cpu = quant::Nf4FrozenLinear::quantize(Tensor::from_floats(weights(n * k, 14), {n, k}));
  const auto gpu = cpu->to(kGpu);
  const std::vector<float> w_deq = quant::dequantize_nf4(cpu->weight()).to_floats();
  // [2, 3, k]: six rows.
  const std::vector<uint16_t> x = random_bf16(6 * k, 15);
  Tensor x_dev = upload(x, DType::BF16).view({2, 3, k});
  const Tensor y = gpu->matmul_direct(x_dev);
  ASSERT_TRUE(y.defined());
  EXPECT_EQ(y.shape(), (engine::Shape{2, 3, n}));
  EXPECT_EQ(y.dtype(), DType::BF16);
  EXPECT_TRUE(y.device().is_cuda());
  expect_matmul_close(host<uint16_t>(y), x, w_deq, 6, n, k);
  // No kernel for these: the caller dequantizes and runs a GEMM.
  EXPECT_FALSE(gpu->matmul_direct(Tensor::zeros({65, k}, DType::BF16, kGpu)).defined());
  EXPECT_FALSE(gpu->matmul_direct(Tensor::zeros({4, k}, DType::F32, kGpu)).defined());
  EXPECT_FALSE(gpu->matmul_direct(Tensor::zeros({4, k}, DType::BF16)).defined());
  EXPECT_FALSE(cpu->matmul_direct(Tensor::zeros({4, k}, DType::BF16)).defined());
  EXPECT_THROW(gpu->matmul_direct(Tensor::zeros({4, k + 1}, DType::BF16, kGpu)), engine::Error);
}

}  // namespace
