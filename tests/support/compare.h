// The one set of comparison helpers for every test. Each reports the first few bad
// elements with their values and bound, then the count; non-finite results always fail.
//
// expect_close_to_reference: a CUDA result against the CPU reference, element by element:
//   |got - ref| <= u_out |ref| + 2 K u_f32 (|ref| + rms ref)
// u_out: unit roundoff of the output type (2^-8 bf16, 2^-24 f32), for the final
// rounding; 2 K u_f32: an fp32 accumulation of length K in either order.
#pragma once
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/tensor.h"

namespace testing_support {

constexpr double kUnitRoundoffF32 = 1.0 / (1 << 24);
constexpr double kUnitRoundoffBF16 = 1.0 / (1 << 8);

// Unit roundoff of a float dtype (bf16 2^-8, f32 2^-24).
double unit_roundoff(engine::DType dtype);
// Root mean square of v (0 when empty).
double rms(const std::vector<float>& v);

// Optional per-element detail added to a failure message (say, the size of one term).
using ElementNote = std::function<std::string(size_t index)>;

// |got_i - ref_i| <= tol_i for every i (ref in float, or in double when computed so).
void expect_within(const std::vector<float>& got, const std::vector<float>& ref,
                   const std::vector<double>& tol, const std::string& what,
                   const ElementNote& note = nullptr);
void expect_within(const std::vector<float>& got, const std::vector<double>& ref,
                   const std::vector<double>& tol, const std::string& what,
                   const ElementNote& note = nullptr);
// |got_i - ref_i| <= tol for every i (hand-computed expectations).
void expect_near_all(const std::vector<float>& got, const std::vector<float>& ref, double tol,
                     const std::string& what = "");

// tol_i = u_out |ref_i| + k_u (|ref_i| + rms ref): a final rounding plus K roundings of a
// chain whose terms are no larger than the output's typical size.
std::vector<double> relative_tolerance(const std::vector<float>& ref, double u_out, double k_u);

void expect_close_to_reference(const engine::Tensor& got, const engine::Tensor& ref,
                               engine::DType dtype, int64_t k, const std::string& what);

// Bit-for-bit equality (NaNs compare by their bits).
template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}
bool bitwise_equal(const engine::Tensor& a, const engine::Tensor& b);  // as f32 values

template <class T>
void expect_bitwise(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0 && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: got " << +got[i] << ", want " << +want[i];
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements differ";
}
void expect_bitwise(const engine::Tensor& got, const engine::Tensor& want, const std::string& what);

// For tests of the checks themselves: runs `fn` with its GoogleTest failures intercepted
// (not reported) and returns how many there were.
int failures_reported(const std::function<void()>& fn);

}  // namespace testing_support
