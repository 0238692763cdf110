// Online softmax statistics, shared by the CPU reference attention
// (engine/cpu/attention.cpp) and the CUDA attention kernels (kernels/attention_*.cu).
//
// For a row of scores x_1..x_n the softmax needs m = max_j x_j and l = sum_j exp(x_j - m);
// the log-sum-exp is m + log l. Flash attention sees the scores one tile at a time and
// keeps a running (m, l). When a tile with maximum t arrives:
//
//   m' = max(m, t)                 new running maximum
//   a  = exp(m - m')               rescale factor: everything accumulated relative to the
//                                  old maximum (l, and the output rows O = sum p v) is
//                                  multiplied by a
//   l' = a l + sum_{j in tile} exp(x_j - m')
//
// The result does not depend on how the scores are cut into tiles, up to rounding:
// two states (m_a, l_a), (m_b, l_b) of disjoint key sets merge into
// (max, l_a exp(m_a - max) + l_b exp(m_b - max)), which is associative and commutative
// in exact arithmetic. tests/engine/test_online_softmax.cpp checks both properties in
// floating point against a one-pass double reference with a derived tolerance.
//
// Masked scores are -inf. While every score seen so far is -inf, m = -inf and the
// naive formulas give exp(-inf - (-inf)) = NaN; here the rescale factor is 0 when the
// old maximum is -inf (there was nothing to rescale) and exponents are taken relative to
// offset() = 0 instead of -inf (so exp(-inf - 0) = 0).
//
// Base: the CUDA kernels work in base 2 (scores pre-multiplied by log2 e, so that each
// exponential is one exp2 instruction): OnlineSoftmax<float, true>, whose lse() is then a
// base-2 log-sum-exp (multiply by ln 2 for the natural one). The CPU reference uses
// OnlineSoftmax<double> (natural base).
#pragma once
#include <cmath>

#include "kernels/math/hd.h"

namespace kmath {

HD float softmax_exp(float x, bool base2) {
#if defined(__CUDA_ARCH__)
  return base2 ? exp2f(x) : expf(x);
#else
  return base2 ? std::exp2(x) : std::exp(x);
#endif
}
HD double softmax_exp(double x, bool base2) {
#if defined(__CUDA_ARCH__)
  return base2 ? exp2(x) : exp(x);
#else
  return base2 ? std::exp2(x) : std::exp(x);
#endif
}
HD float softmax_log(float x, bool base2) {
#if defined(__CUDA_ARCH__)
  return base2 ? log2f(x) : logf(x);
#else
  return base2 ? std::log2(x) : std::log(x);
#endif
}
HD double softmax_log(double x, bool base2) {
#if defined(__CUDA_ARCH__)
  return base2 ? log2(x) : log(x);
#else
  return base2 ? std::log2(x) : std::log(x);
#endif
}

// Running (max, sum) of one softmax row. T is float (kernels) or double (CPU reference).
template <class T, bool kBase2 = false>
struct OnlineSoftmax {
  T max = -static_cast<T>(INFINITY);
  T sum = 0;

  HD static T exp(T x) { return softmax_exp(x, kBase2); }

  // Step 1 of a tile: raise the running maximum to include tile_max and return the
  // factor a = exp(m - m') by which everything accumulated so far must be multiplied
  // (sum is rescaled here; the caller rescales its own accumulators, e.g. O).
  HD T rescale(T tile_max) {
    const T m_new = tile_max > max ? tile_max : max;
    const T a = max == -static_cast<T>(INFINITY) ? T(0) : exp(max - m_new);
    max = m_new;
    sum *= a;
    return a;
  }

  // Step 2: the offset subtracted from a score before exponentiating: the running
  // maximum, or 0 while it is still -inf (every score masked).
  HD T offset() const { return max == -static_cast<T>(INFINITY) ? T(0) : max; }

  // Step 3: add the tile's sum of exp(x - offset()) (computed by the caller, who also
  // needs the individual exponentials).
  HD void add_sum(T tile_sum) { sum += tile_sum; }

  // One score as a tile of its own (the CPU reference, the fallback kernels); returns
  // the rescale factor for the caller's accumulators.
  HD T add(T x) {
    const T a = rescale(x);
    sum += exp(x - offset());
    return a;
  }

  // log-sum-exp in the struct's base: max + log(sum); -inf when every score was -inf.
  HD T lse() const { return sum > T(0) ? max + softmax_log(sum, kBase2) : -static_cast<T>(INFINITY); }

  // The state of the union of two disjoint key sets.
  HD static OnlineSoftmax merge(OnlineSoftmax a, OnlineSoftmax b) {
    OnlineSoftmax r = a;
    r.rescale(b.max);
    const T scale_b = b.max == -static_cast<T>(INFINITY) ? T(0) : exp(b.max - r.offset());
    r.sum += b.sum * scale_b;
    return r;
  }
};

}  // namespace kmath
