#include "tests/support/compare.h"

#include <gtest/gtest-spi.h>

#include <cmath>

namespace testing_support {

double unit_roundoff(engine::DType dtype) {
  return dtype == engine::DType::BF16 ? kUnitRoundoffBF16 : kUnitRoundoffF32;
}

double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return v.empty() ? 0 : std::sqrt(s / double(v.size()));
}

namespace {

template <class Ref>
void expect_within_impl(const std::vector<float>& got, const std::vector<Ref>& ref,
                        const std::vector<double>& tol, const std::string& what,
                        const ElementNote& note) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  ASSERT_EQ(tol.size(), ref.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double diff = std::fabs(double(got[i]) - double(ref[i]));
    if (std::isfinite(got[i]) && diff <= tol[i]) continue;
    if (bad++ < 5)
      ADD_FAILURE() << what << " element " << i << ": got " << got[i] << ", reference " << ref[i]
                    << ", |diff| " << diff << ", bound " << tol[i] << (note ? note(i) : "");
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << ref.size() << " elements out of bounds";
}

}  // namespace

void expect_within(const std::vector<float>& got, const std::vector<float>& ref,
                   const std::vector<double>& tol, const std::string& what, const ElementNote& note) {
  expect_within_impl(got, ref, tol, what, note);
}

void expect_within(const std::vector<float>& got, const std::vector<double>& ref,
                   const std::vector<double>& tol, const std::string& what, const ElementNote& note) {
  expect_within_impl(got, ref, tol, what, note);
}

void expect_near_all(const std::vector<float>& got, const std::vector<float>& ref, double tol,
                     const std::string& what) {
  expect_within(got, ref, std::vector<double>(ref.size(), tol), what);
}

std::vector<double> relative_tolerance(const std::vector<float>& ref, double u_out, double k_u) {
  const double r = rms(ref);
  std::vector<double> tol(ref.size());
  for (size_t i = 0; i < ref.size(); ++i)
    tol[i] = u_out * std::fabs(ref[i]) + k_u * (std::fabs(ref[i]) + r);
  return tol;
}

void expect_close_to_reference(const engine::Tensor& got, const engine::Tensor& ref,
                               engine::DType dtype, int64_t k, const std::string& what) {
  const std::vector<float> r = ref.to_floats();
  expect_within(got.to_floats(), r,
                relative_tolerance(r, unit_roundoff(dtype), 2.0 * double(k) * kUnitRoundoffF32), what);
}

bool bitwise_equal(const engine::Tensor& a, const engine::Tensor& b) {
  return bitwise_equal(a.to_floats(), b.to_floats());
}

void expect_bitwise(const engine::Tensor& got, const engine::Tensor& want, const std::string& what) {
  expect_bitwise(got.to_floats(), want.to_floats(), what);
}

int failures_reported(const std::function<void()>& fn) {
  testing::TestPartResultArray results;
  {
    testing::ScopedFakeTestPartResultReporter intercept(
        testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    fn();
  }
  return results.size();
}

}  // namespace testing_support
