#include "tests/support/compare.h"

#include <gtest/gtest.h>

#include <cmath>

namespace testing_support {

void expect_close_to_reference(const engine::Tensor& got_t, const engine::Tensor& ref_t,
                               engine::DType dtype, int64_t k, const std::string& what) {
  const std::vector<float> got = got_t.to_floats(), ref = ref_t.to_floats();
  ASSERT_EQ(got.size(), ref.size()) << what;
  double r = 0;
  for (float v : ref) r += double(v) * v;
  r = ref.empty() ? 0 : std::sqrt(r / ref.size());
  const double u_out = dtype == engine::DType::BF16 ? 1.0 / 256 : 1.0 / (1 << 24);
  const double k_u = 2.0 * k / (1 << 24);
  int bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double tol = u_out * std::fabs(ref[i]) + k_u * (std::fabs(ref[i]) + r);
    if (!(std::isfinite(got[i]) && std::fabs(got[i] - ref[i]) <= tol) && bad++ < 5)
      ADD_FAILURE() << what << " element " << i << ": cuda " << got[i] << ", cpu " << ref[i]
                    << ", tolerance " << tol;
  }
}

}  // namespace testing_support
