// RMSNorm math shared by the CPU reference (engine/cpu/norm_rope.cpp) and the CUDA
// kernels (kernels/rmsnorm.cu).
//
// Per row x of length D, weight w [D], upstream gradient g:
//   r     = 1 / sqrt(mean(x^2) + eps)                      (the saved per-row "rstd")
//   y_j   = w_j * (x_j * r)
//   dx_k  = r * (w_k g_k - (x_k r) * c),   c = r * dot / D,   dot = sum_j g_j w_j x_j
//           (c is mean_j(g_j w_j xhat_j) with xhat = x r; expanding gives the familiar
//            r w_k g_k - r^3 x_k dot / D, but this form never forms r^3, which
//            overflows fp32 for tiny rows with eps = 0)
//   dw_j  = sum over rows of g_j * (x_j * r)
// The reductions (sum of x^2, dot, the row sum of dw) belong to the caller: double
// on the CPU, fp32 in a fixed-order tree on the GPU. These functions are the per-row
// and per-element steps that follow, so both sides round them the same way.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/math/hd.h"

namespace kmath {

// r from the row's sum of squares. Correctly rounded division and sqrt on both sides
// (nvcc's default -prec-div/-prec-sqrt; no fast-math rsqrt).
HD float rmsnorm_rstd(float sum_sq, int64_t d, float eps) {
  return 1.0f / sqrtf(sum_sq / static_cast<float>(d) + eps);
}

HD float rmsnorm_apply(float x, float w, float rstd) { return w * (x * rstd); }

// c = mean_j(g_j w_j xhat_j) from dot = sum_j g_j w_j x_j.
HD float rmsnorm_dx_coef(float dot, float rstd, int64_t d) {
  return rstd * (dot / static_cast<float>(d));
}

HD float rmsnorm_dx(float x, float w, float g, float rstd, float coef) {
  return rstd * (w * g - (x * rstd) * coef);
}

// One row's contribution to dw_j.
HD float rmsnorm_dw_term(float x, float g, float rstd) { return g * (x * rstd); }

}  // namespace kmath
