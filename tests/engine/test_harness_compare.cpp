// The comparison helpers of tests/support/compare.h have teeth: the bound the CUDA
// parity tests use passes a result that differs from the reference only by the final
// rounding, and fails one whose largest element is off by 1% or is NaN.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/rng.h"
#include "tests/support/compare.h"

namespace {

using engine::DType;
using engine::Tensor;
using testing_support::expect_close_to_reference;
using testing_support::failures_reported;

// K = 64, a typical reduction length of the op cases.
constexpr int64_t kReduction = 64;

struct Case {
  Tensor ref, got;  // got: ref rounded through the dtype, as a device would return it
  int64_t largest = 0;
};

Case make_case(DType dtype) {
  engine::Generator gen(31);
  Case c;
  c.ref = engine::uniform({257}, -1.0f, 1.0f, gen);
  c.got = c.ref.to_dtype(dtype).to_dtype(DType::F32);
  const std::vector<float> r = c.ref.to_floats();
  for (size_t i = 1; i < r.size(); ++i)
    if (std::fabs(r[i]) > std::fabs(r[c.largest])) c.largest = static_cast<int64_t>(i);
  return c;
}

class CloseToReference : public testing::TestWithParam<DType> {};

TEST_P(CloseToReference, PassesTheUnperturbedResult) {
  const Case c = make_case(GetParam());
  EXPECT_EQ(failures_reported([&] {
    expect_close_to_reference(c.got, c.ref, GetParam(), kReduction, "unperturbed");
  }), 0);
}

TEST_P(CloseToReference, CatchesAOnePercentError) {
  Case c = make_case(GetParam());
  c.got.data<float>()[c.largest] = c.ref.data<float>()[c.largest] * 1.01f;
  EXPECT_GT(failures_reported([&] {
    expect_close_to_reference(c.got, c.ref, GetParam(), kReduction, "perturbed");
  }), 0);
}

TEST_P(CloseToReference, CatchesNaN) {
  Case c = make_case(GetParam());
  c.got.data<float>()[3] = NAN;
  EXPECT_GT(failures_reported([&] {
    expect_close_to_reference(c.got, c.ref, GetParam(), kReduction, "nan");
  }), 0);
}

std::string dtype_label(const testing::TestParamInfo<DType>& p) { return engine::dtype_name(p.param); }

INSTANTIATE_TEST_SUITE_P(Dtypes, CloseToReference, testing::Values(DType::F32, DType::BF16),
                         dtype_label);

TEST(ExpectBitwise, CatchesOneUlp) {
  const std::vector<float> a = {1.0f, -2.5f, 3.0f};
  std::vector<float> b = a;
  testing_support::expect_bitwise(b, a, "equal");
  b[1] = std::nextafter(b[1], 0.0f);
  EXPECT_GT(failures_reported([&] { testing_support::expect_bitwise(b, a, "ulp"); }), 0);
}

}  // namespace
