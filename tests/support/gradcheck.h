// Finite-difference gradient check for one registry op on one case.
//
// Loss L = sum_i W_i y_i with fixed random weights W, so dL/dx is the op's
// vector-Jacobian product with W. For each checked element x_j, the central
// difference D(h) = (L(x_j + h) - L(x_j - h)) / 2h is compared with the analytic
// gradient g_j under a tolerance derived from fp32 rounding and truncation:
//
//   |g_j - D(h)| <= |D(h) - D(2h)|                truncation: D(h) = g + c h^2, so
//                                                 |D(h)-D(2h)| = 3|c| h^2 (3x margin)
//                 + K u S_j / h                   rounding of the outputs that x_j moves:
//                                                 S_j = sum over changed y_i of |W_i|(|y_i| + rms y)
//                 + K u (|g_j| + rms g)           rounding inside the analytic backward
//
// with u = 2^-24 (fp32 unit roundoff) and K the case's reduction length. Outputs
// that x_j does not affect are bitwise equal in both evaluations and cancel exactly,
// which is what keeps the bound tight enough to catch a 1% gradient error.
#pragma once
#include <functional>
#include <string>

#include "tests/support/op_cases.h"

namespace testing_support {

struct GradCheckResult {
  bool ok = true;
  int checked = 0;            // elements compared
  double worst_ratio = 0;     // max |g - D| / tol over checked elements
  std::string worst;          // description of the worst element
};

// Hook for tests of the checker itself: may alter the analytic gradients.
using GradientTamper = std::function<void(std::vector<engine::Tensor>& grads)>;

GradCheckResult gradcheck(engine::OpId id, const OpCase& c, uint64_t seed,
                          const GradientTamper& tamper = nullptr);

}  // namespace testing_support
