// NF4 quantization (kernels/math/nf4.h, engine/quant/nf4.h) against its definition and against
// bitsandbytes. The math under test: nibble = nearest NF4 code to x * (1/absmax) over blocks of
// 64 (midpoint ties to the lower code), two nibbles per byte high first; double quantization
// stores absmax - mean(absmax) as 8-bit dynamic-map codes over blocks of 256 plus fp32 scales;
// dequantization is code * absmax'. tests/data/nf4_reference.bin comes from bitsandbytes via
// tests/data/make_nf4_reference.py (see its header for how edge cases were reconciled).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/quant/nf4.h"
#include "kernels/math/nf4.h"

namespace {

using engine::DType;
using engine::Shape;
using engine::Tensor;
namespace quant = engine::quant;

// facts.md, NF4 section.
const double kFactsCode[16] = {-1.0,
                               -0.6961928009986877,
                               -0.5250730514526367,
                               -0.39491748809814453,
                               -0.28444138169288635,
                               -0.18477343022823334,
                               -0.09105003625154495,
                               0.0,
                               0.07958029955625534,
                               0.16093020141124725,
                               0.24611230194568634,
                               0.33791524171829224,
                               0.44070982933044434,
                               0.5626170039176941,
                               0.7229568362236023,
                               1.0};

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Distance in units in the last place between two finite floats of the same sign.
int64_t ulps(float a, float b) {
  return std::llabs(static_cast<int64_t>(bits(a)) - static_cast<int64_t>(bits(b)));
}

std::vector<float> randn(int64_t n, float stddev, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(gen);
  return v;
}

template <class T>
std::vector<T> values(const Tensor& t) {
  const T* p = t.data<T>();
  return std::vector<T>(p, p + t.numel());
}

// ---- Code table and the nibble rule

TEST(Nf4Math, CodeTableMatchesFacts) {
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(kmath::nf4_code(i), static_cast<float>(kFactsCode[i])) << i;
    if (i > 0) {
      EXPECT_LT(kmath::nf4_code(i - 1), kmath::nf4_code(i));
    }
  }
  EXPECT_EQ(kmath::nf4_code(kmath::kNf4ZeroNibble), 0.0f);
}

// bnb's CUDA thresholds are decimal literals of the midpoints; rounded straight to fp32 four of
// them land one ulp from the fp32 mean of the two codes (the CPU backend's thresholds).
TEST(Nf4Math, MidpointsAreTheMeansOfAdjacentCodesToOneUlp) {
  int off_by_one = 0;
  for (int k = 0; k < 15; ++k) {
    const float mean = (kmath::nf4_code(k) + kmath::nf4_code(k + 1)) / 2.0f;
    EXPECT_LE(ulps(kmath::nf4_midpoint(k), mean), 1) << k;
    off_by_one += kmath::nf4_midpoint(k) != mean;
  }
  EXPECT_EQ(off_by_one, 4);
}

TEST(Nf4Math, NearestCodeWithMidpointTiesToTheLowerCode) {
  for (int k = 0; k < 16; ++k) EXPECT_EQ(kmath::nf4_quantize_value(kmath::nf4_code(k)), k);
  for (int k = 0; k < 15; ++k) {
    const float m = kmath::nf4_midpoint(k);
    EXPECT_EQ(kmath::nf4_quantize_value(m), k) << "midpoint " << k << " goes down";
    EXPECT_EQ(kmath::nf4_quantize_value(std::nextafter(m, 2.0f)), k + 1) << k;
    EXPECT_EQ(kmath::nf4_quantize_value(std::nextafter(m, -2.0f)), k) << k;
  }
  EXPECT_EQ(kmath::nf4_quantize_value(-0.0f), kmath::kNf4ZeroNibble);
  EXPECT_EQ(kmath::nf4_quantize_value(-1.5f), 0);
  EXPECT_EQ(kmath::nf4_quantize_value(1.5f), 15);
  // Against the definition: no code is strictly nearer than the chosen one (checked in double).
  for (int i = -20000; i <= 20000; ++i) {
    const float s = static_cast<float>(i) / 20000.0f;
    const int q = kmath::nf4_quantize_value(s);
    const double d = std::fabs(static_cast<double>(s) - kmath::nf4_code(q));
    for (int k = 0; k < 16; ++k)
      ASSERT_LE(d, std::fabs(static_cast<double>(s) - kmath::nf4_code(k))) << s << " code " << k;
  }
}

TEST(Nf4Math, PackingPutsTheEvenElementInTheHighNibble) {
  EXPECT_EQ(kmath::nf4_pack(0xA, 0x3), 0xA3);
  EXPECT_EQ(kmath::nf4_high(0xA3), 0xA);
  EXPECT_EQ(kmath::nf4_low(0xA3), 0x3);
  const uint8_t packed[2] = {0xA3, 0x5F};
  EXPECT_EQ(kmath::nf4_nibble(packed, 0), 0xA);
  EXPECT_EQ(kmath::nf4_nibble(packed, 1), 0x3);
  EXPECT_EQ(kmath::nf4_nibble(packed, 2), 0x5);
  EXPECT_EQ(kmath::nf4_nibble(packed, 3), 0xF);

  // Codes 0..15 then 15..0 in one block with absmax 1 quantize to themselves.
  std::vector<float> x;
  for (int k = 0; k < 16; ++k) x.push_back(kmath::nf4_code(k));
  for (int k = 15; k >= 0; --k) x.push_back(kmath::nf4_code(k));
  std::vector<uint8_t> p(16);
  float absmax = 0;
  quant::quantize_nf4_blocks(x.data(), 32, p.data(), &absmax);
  EXPECT_EQ(absmax, 1.0f);
  EXPECT_EQ(p[0], 0x01);
  EXPECT_EQ(p[7], 0xEF);
  EXPECT_EQ(p[8], 0xFE);
  EXPECT_EQ(p[15], 0x10);
}

// ---- Dynamic map

TEST(Nf4DynamicMap, RebuiltFromItsDefinition) {
  EXPECT_EQ(kmath::dynamic_map_value(0), -0.99296875f);
  EXPECT_EQ(kmath::dynamic_map_value(127), 0.0f);
  EXPECT_EQ(kmath::dynamic_map_value(255), 1.0f);
  // The definition in exact arithmetic: for g = 0..6 the midpoints of linspace(0.1, 1, 2^g+1)
  // times 10^(g-6), their negatives, 0 and 1, sorted. fp32 evaluation (as torch does it) may
  // differ from the exactly rounded value by a couple of ulp, never more.
  std::vector<double> def = {0.0, 1.0};
  for (int g = 0; g <= 6; ++g) {
    const int n = (1 << g) + 1;
    for (int j = 0; j + 1 < n; ++j) {
      const double mean = 0.1 + 0.9 * (j + 0.5) / (n - 1);
      def.push_back(std::pow(10.0, g - 6) * mean);
      def.push_back(-std::pow(10.0, g - 6) * mean);
    }
  }
  ASSERT_EQ(def.size(), 256u);
  std::sort(def.begin(), def.end());
  for (int i = 0; i < 256; ++i) {
    const float v = kmath::dynamic_map_value(i);
    EXPECT_LE(ulps(v, static_cast<float>(def[i])), 2) << i;
    if (i > 0) {
      EXPECT_LT(kmath::dynamic_map_value(i - 1), v) << i;
    }
    if (i < 127) {
      EXPECT_EQ(v, -kmath::dynamic_map_value(254 - i)) << i;
    }
  }
}

TEST(Nf4DynamicMap, QuantizeIsNearestWithBitsandbytesTies) {
  std::vector<float> map(256);
  for (int i = 0; i < 256; ++i) map[i] = kmath::dynamic_map_value(i);
  const float* m = map.data();
  for (int i = 0; i < 256; ++i) EXPECT_EQ(kmath::dynamic_map_quantize(map[i], m), i);
  // bnb's search ends on an even index and compares with the fp32 midpoint to the
  // neighbour on x's side: an exact tie goes to the even entry.
  for (int k = 0; k < 255; ++k) {
    const float mid = (map[k] + map[k + 1]) * 0.5f;
    if (mid == map[k] || mid == map[k + 1]) continue;  // neighbours one ulp apart
    EXPECT_EQ(kmath::dynamic_map_quantize(mid, m), k % 2 == 0 ? k : k + 1) << k;
    EXPECT_EQ(kmath::dynamic_map_quantize(std::nextafter(mid, 2.0f), m), k + 1) << k;
    EXPECT_EQ(kmath::dynamic_map_quantize(std::nextafter(mid, -2.0f), m), k) << k;
  }
  EXPECT_EQ(kmath::dynamic_map_quantize(-1.0f, m), 0);
  EXPECT_EQ(kmath::dynamic_map_quantize(std::numeric_limits<float>::quiet_NaN(), m), 0);
  // Random values: the chosen entry is a nearest one; the table-free overload agrees.
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int t = 0; t < 20000; ++t) {
    const float x = t % 2 ? u(gen) : u(gen) * 1e-3f;
    const int q = kmath::dynamic_map_quantize(x, m);
    const double d = std::fabs(static_cast<double>(x) - map[q]);
    if (q > 0) {
      ASSERT_LE(d, std::fabs(static_cast<double>(x) - map[q - 1])) << x;
    }
    if (q < 255) {
      ASSERT_LE(d, std::fabs(static_cast<double>(x) - map[q + 1])) << x;
    }
    ASSERT_EQ(kmath::dynamic_map_quantize(x), q);
  }
}

// ---- bitsandbytes reference data

struct RefCase {
  std::string name;
  bool double_quant = false, has_input = false, has_dequant = false;
  std::vector<int64_t> dims;
  std::vector<float> input;
  std::vector<uint8_t> packed, absmax_q;
  std::vector<float> absmax, nested, dequant;
  float offset = 0;
};

struct RefFile {
  std::vector<float> code, map;
  std::vector<RefCase> cases;
};

class Reader {
 public:
  explicit Reader(const std::string& path) : in_(path, std::ios::binary) {}
  bool ok() const { return static_cast<bool>(in_); }
  template <class T>
  T get() {
    T v{};
    in_.read(reinterpret_cast<char*>(&v), sizeof(T));
    return v;
  }
  template <class T>
  std::vector<T> array(uint64_t n) {
    std::vector<T> v(n);
    in_.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(T)));
    return v;
  }
  template <class T>
  std::vector<T> sized() {
    return array<T>(get<uint64_t>());
  }

 private:
  std::ifstream in_;
};

RefFile load_reference() {
  const std::string path = std::string(ENGINE_SOURCE_DIR) + "/tests/data/nf4_reference.bin";
  Reader r(path);
  EXPECT_TRUE(r.ok()) << "cannot open " << path;
  RefFile f;
  const auto magic = r.array<char>(8);
  EXPECT_EQ(std::string(magic.begin(), magic.end()), "NF4REF01");
  const uint32_t ncases = r.get<uint32_t>();
  f.code = r.array<float>(16);
  f.map = r.array<float>(256);
  for (uint32_t c = 0; c < ncases && r.ok(); ++c) {
    RefCase k;
    const auto name = r.array<char>(r.get<uint32_t>());
    k.name.assign(name.begin(), name.end());
    k.double_quant = r.get<uint32_t>() != 0;
    k.has_input = r.get<uint32_t>() != 0;
    k.has_dequant = r.get<uint32_t>() != 0;
    k.dims = r.array<int64_t>(r.get<uint32_t>());
    const uint64_t numel = r.get<uint64_t>();
    if (k.has_input) k.input = r.array<float>(numel);
    k.packed = r.sized<uint8_t>();
    if (k.double_quant) {
      k.absmax_q = r.sized<uint8_t>();
      k.nested = r.sized<float>();
      k.offset = r.get<float>();
    } else {
      k.absmax = r.sized<float>();
    }
    if (k.has_dequant) k.dequant = r.array<float>(numel);
    f.cases.push_back(std::move(k));
  }
  EXPECT_TRUE(r.ok()) << "truncated " << path;
  EXPECT_EQ(f.cases.size(), ncases);
  return f;
}

const RefFile& reference() {
  static const RefFile f = load_reference();
  return f;
}

// The weights the script generates for cases without a stored input (make_nf4_reference.py,
// hash_input): a 24-bit hash mapped exactly to [-1, 1) times a per-block scale of (1..8)/8.
std::vector<float> hash_input(int64_t n) {
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    uint64_t h = (static_cast<uint64_t>(i) * 2654435761ull + 12345ull) & 0xFFFFFFFFull;
    h ^= h >> 15;
    h = (h * 2246822519ull) & 0xFFFFFFFFull;
    h ^= h >> 13;
    const float u = static_cast<float>(static_cast<int64_t>(h >> 8) - (1 << 23)) * 0x1p-23f;
    const float scale = static_cast<float>((i / 64) % 8 + 1) * 0.125f;
    x[static_cast<size_t>(i)] = u * scale;
  }
  return x;
}

Shape shape_of(const std::vector<int64_t>& d) {
  EXPECT_EQ(d.size(), 2u);
  return Shape{d[0], d[1]};
}

TEST(Nf4Reference, TablesMatchBitsandbytes) {
  const RefFile& f = reference();
  ASSERT_EQ(f.code.size(), 16u);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(bits(kmath::nf4_code(i)), bits(f.code[i])) << i;
  for (int i = 0; i < 256; ++i) EXPECT_EQ(bits(kmath::dynamic_map_value(i)), bits(f.map[i])) << i;
}

TEST(Nf4Reference, QuantizationIsBitIdentical) {
  const RefFile& f = reference();
  ASSERT_GE(f.cases.size(), 13u);
  for (const RefCase& c : f.cases) {
    SCOPED_TRACE(c.name);
    const Shape shape = shape_of(c.dims);
    const std::vector<float> x = c.has_input ? c.input : hash_input(shape.numel());
    const quant::Nf4Weight q = quant::quantize_nf4(Tensor::from_floats(x, shape), c.double_quant);
    EXPECT_EQ(q.shape, shape);
    EXPECT_EQ(values<uint8_t>(q.packed), c.packed);
    if (!c.double_quant) {
      const auto absmax = values<float>(q.absmax);
      ASSERT_EQ(absmax.size(), c.absmax.size());
      for (size_t i = 0; i < absmax.size(); ++i) EXPECT_EQ(bits(absmax[i]), bits(c.absmax[i])) << i;
      continue;
    }
    // torch's float32 mean and ours (double accumulation) may differ in the last bit.
    EXPECT_LE(ulps(q.offset, c.offset), 1) << q.offset << " vs " << c.offset;
    // Given bnb's offset, the nested step is bit-identical.
    std::vector<float> absmax(static_cast<size_t>(q.num_blocks()));
    std::vector<uint8_t> packed(static_cast<size_t>((shape.numel() + 1) / 2));
    quant::quantize_nf4_blocks(x.data(), shape.numel(), packed.data(), absmax.data());
    std::vector<uint8_t> absmax_q(absmax.size());
    std::vector<float> nested(c.nested.size());
    quant::quantize_absmax_nested(absmax.data(), q.num_blocks(), c.offset, absmax_q.data(),
                                  nested.data());
    EXPECT_EQ(absmax_q, c.absmax_q);
    ASSERT_EQ(nested.size(), c.nested.size());
    for (size_t i = 0; i < nested.size(); ++i) EXPECT_EQ(bits(nested[i]), bits(c.nested[i])) << i;
    if (q.offset == c.offset) {  // then the whole pipeline agrees
      EXPECT_EQ(values<uint8_t>(q.absmax_q), c.absmax_q);
      EXPECT_EQ(values<float>(q.nested_absmax), c.nested);
    }
  }
}

TEST(Nf4Reference, DequantizationIsBitIdentical) {
  for (const RefCase& c : reference().cases) {
    if (!c.has_dequant) continue;
    SCOPED_TRACE(c.name);
    // Dequantize bnb's own quantized fields.
    quant::Nf4Weight w;
    w.shape = shape_of(c.dims);
    w.double_quant = c.double_quant;
    w.packed = Tensor::empty({static_cast<int64_t>(c.packed.size())}, DType::U8);
    std::memcpy(w.packed.raw_data(), c.packed.data(), c.packed.size());
    if (c.double_quant) {
      w.absmax_q = Tensor::empty({static_cast<int64_t>(c.absmax_q.size())}, DType::U8);
      std::memcpy(w.absmax_q.raw_data(), c.absmax_q.data(), c.absmax_q.size());
      w.nested_absmax = Tensor::from_floats(c.nested, {static_cast<int64_t>(c.nested.size())});
      w.offset = c.offset;
    } else {
      w.absmax = Tensor::from_floats(c.absmax, {static_cast<int64_t>(c.absmax.size())});
    }
    const auto out = dequantize_nf4(w).to_floats();
    ASSERT_EQ(out.size(), c.dequant.size());
    for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(bits(out[i]), bits(c.dequant[i])) << i;
  }
}

// ---- Properties of our own quantization

// Worst-case |x - x'| for block b, derived from the format: the scaled value is at most half
// the widest gap between adjacent codes from its code; with double quantization absmax' is at
// most half the widest dynamic-map gap times the nested scale from absmax (|code| <= 1 carries
// that error over unchanged); plus a few roundings.
struct ErrorBound {
  double nf4_half_gap = 0, map_half_gap = 0;
  ErrorBound() {
    for (int k = 0; k < 15; ++k)
      nf4_half_gap = std::max(nf4_half_gap, (kmath::nf4_code(k + 1) - static_cast<double>(kmath::nf4_code(k))) / 2);
    for (int k = 0; k < 255; ++k)
      map_half_gap = std::max(map_half_gap, (kmath::dynamic_map_value(k + 1) -
                                             static_cast<double>(kmath::dynamic_map_value(k))) / 2);
  }
};

void expect_within_bound(const std::vector<float>& x, const Shape& shape, bool double_quant) {
  const ErrorBound eb;
  const quant::Nf4Weight q = quant::quantize_nf4(Tensor::from_floats(x, shape), double_quant);
  const auto out = quant::dequantize_nf4(q).to_floats();
  const auto absmax_dq = quant::dequantized_absmax(q).to_floats();
  const double eps = std::numeric_limits<float>::epsilon();
  for (int64_t b = 0; b < q.num_blocks(); ++b) {
    const int64_t begin = b * 64, end = std::min<int64_t>(begin + 64, shape.numel());
    double absmax = 0;
    for (int64_t i = begin; i < end; ++i) absmax = std::max(absmax, std::fabs(static_cast<double>(x[i])));
    double absmax_err = 4 * eps * absmax;
    if (double_quant) {
      const double nested = q.nested_absmax.to_floats()[b / 256];
      absmax_err += eb.map_half_gap * nested + 4 * eps * (nested + std::fabs(q.offset));
      ASSERT_LE(std::fabs(absmax_dq[b] - absmax), absmax_err) << "block " << b;
    } else {
      ASSERT_EQ(absmax_dq[b], static_cast<float>(absmax));
    }
    const double bound = eb.nf4_half_gap * absmax + absmax_err + 4 * eps * absmax;
    for (int64_t i = begin; i < end; ++i)
      ASSERT_LE(std::fabs(static_cast<double>(out[i]) - x[i]), bound) << "element " << i;
  }
}

TEST(Nf4Quantize, RoundTripErrorWithinTheFormatsBound) {
  // The widest gaps: NF4 between -1 and the next code, the map between group-6 entries.
  EXPECT_NEAR(ErrorBound().nf4_half_gap, (1.0 - 0.6961928009986877) / 2, 1e-7);
  EXPECT_NEAR(ErrorBound().map_half_gap, 0.9 / 64 / 2, 1e-7);
  // Per-row scales spread the absmax values so that the nested step has work to do.
  auto x = randn(64 * 1000, 1.0f, 11);
  for (size_t i = 0; i < x.size(); ++i) x[i] *= 0.01f * static_cast<float>(1 + (i / 1000) % 13);
  expect_within_bound(x, {64, 1000}, true);
  expect_within_bound(x, {64, 1000}, false);
}

TEST(Nf4Quantize, AllZeroBlocksDequantizeToZero) {
  auto x = randn(4 * 64 * 5, 0.1f, 3);
  for (int i = 64; i < 128; ++i) x[i] = 0.0f;          // block 1
  for (int i = 4 * 64 * 5 - 64; i < 4 * 64 * 5; ++i) x[i] = 0.0f;  // the last block
  for (bool dq : {true, false}) {
    const quant::Nf4Weight q = quant::quantize_nf4(Tensor::from_floats(x, {4, 320}), dq);
    const auto packed = values<uint8_t>(q.packed);
    for (int j = 32; j < 64; ++j) EXPECT_EQ(packed[j], 0x77) << "byte " << j;  // code 0.0
    const auto out = quant::dequantize_nf4(q).to_floats();
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_FALSE(std::isnan(out[i])) << i;
      if (x[i] == 0.0f) {
        ASSERT_EQ(out[i], 0.0f) << i;
      }
    }
  }
}

TEST(Nf4Quantize, EqualAbsmaxGivesAZeroNestedBlockAndExactScales) {
  auto x = randn(6 * 64, 0.3f, 5);
  for (int b = 0; b < 6; ++b) x[b * 64 + 9] = -2.5f;
  const quant::Nf4Weight q = quant::quantize_nf4(Tensor::from_floats(x, {6, 64}), true);
  EXPECT_EQ(q.offset, 2.5f);
  EXPECT_EQ(q.nested_absmax.to_floats()[0], 0.0f);
  for (float a : quant::dequantized_absmax(q).to_floats()) EXPECT_EQ(a, 2.5f);
}

TEST(Nf4Quantize, SizesThatAreNotMultiplesOf64) {
  for (int64_t n : {1, 2, 3, 63, 64, 65, 127, 129, 300, 1001}) {
    SCOPED_TRACE(n);
    const auto x = randn(n, 0.7f, static_cast<uint32_t>(n));
    const Shape shape{1, n};
    for (bool dq : {true, false}) {
      const quant::Nf4Weight q = quant::quantize_nf4(Tensor::from_floats(x, shape), dq);
      EXPECT_EQ(q.packed.numel(), (n + 1) / 2);
      EXPECT_EQ(q.num_blocks(), (n + 63) / 64);
      if (n % 2) {
        EXPECT_EQ(values<uint8_t>(q.packed).back() & 15, kmath::kNf4ZeroNibble);
      }
      if (!dq) {  // the short last block's absmax is over the values it has
        float a = 0;
        for (int64_t i = (n - 1) / 64 * 64; i < n; ++i) a = std::max(a, std::fabs(x[i]));
        EXPECT_EQ(values<float>(q.absmax).back(), a);
      }
      expect_within_bound(x, shape, dq);
    }
  }
}

TEST(Nf4Quantize, Bf16InputEqualsItsF32Value) {
  const auto x = randn(3 * 128, 0.05f, 9);
  const Tensor bf = Tensor::from_floats(x, {3, 128}).to_dtype(DType::BF16);
  const quant::Nf4Weight a = quant::quantize_nf4(bf);
  const quant::Nf4Weight b = quant::quantize_nf4(bf.to_dtype(DType::F32));
  EXPECT_EQ(values<uint8_t>(a.packed), values<uint8_t>(b.packed));
  EXPECT_EQ(values<uint8_t>(a.absmax_q), values<uint8_t>(b.absmax_q));
  EXPECT_EQ(a.offset, b.offset);
}

TEST(Nf4Quantize, CostsAbout4Point127BitsPerParameter) {
  const Shape shape{1024, 2048};
  const auto x = randn(shape.numel(), 0.02f, 13);
  const quant::Nf4Weight q = quant::quantize_nf4(Tensor::from_floats(x, shape), true);
  const double bits_per_param = 8.0 * static_cast<double>(q.nbytes()) / static_cast<double>(shape.numel());
  // 4 + 8/64 + 32/(64*256), plus the 32-bit offset spread over the tensor.
  EXPECT_NEAR(bits_per_param, 4.0 + 8.0 / 64 + 32.0 / (64 * 256) + 32.0 / shape.numel(), 1e-9);
  EXPECT_NEAR(bits_per_param, 4.127, 1e-3);
  const quant::Nf4Weight plain = quant::quantize_nf4(Tensor::from_floats(x, shape), false);
  EXPECT_NEAR(8.0 * static_cast<double>(plain.nbytes()) / static_cast<double>(shape.numel()), 4.5, 1e-9);
}

TEST(Nf4Quantize, RejectsNonFloatAndEmptyTensors) {
  EXPECT_THROW(quant::quantize_nf4(Tensor::from_ints({1, 2}, {2})), engine::Error);
  EXPECT_THROW(quant::quantize_nf4(Tensor::empty({0}, DType::F32)), engine::Error);
}

// A NaN used to vanish in the block's absmax and come back as a code; an Inf zeroed its
// block. Both are refused instead of stored as something else.
TEST(Nf4Quantize, RejectsNonFiniteValues) {
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    std::vector<float> x(130, 0.25f);
    x[100] = bad;
    EXPECT_THROW(quant::quantize_nf4(Tensor::from_floats(x, {130})), engine::Error) << bad;
  }
}

}  // namespace
