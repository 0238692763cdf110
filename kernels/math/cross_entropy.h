// Cross-entropy math shared by the CPU reference (engine/cpu/lm_head_loss.cpp) and the
// CUDA kernels (kernels/cross_entropy.cu). The host-side tiling plan of the fused
// lm_head cross-entropy is in kernels/cross_entropy_tiling.h.
//
// One row of logits z [V] with target t (counted unless t == ignore_index):
//   lse = m + log sum_v exp(z_v - m),   m = max_v z_v      (max-subtracted: no overflow)
//   L   = lse - z_t
//   dL/dz_v = softmax(z)_v - [v == t] = exp(z_v - lse) - [v == t]
// The loss is the mean over the C counted rows, so with upstream gradient g
//   dlogits_v = (g / C) (exp(z_v - lse) - [v == t])   on counted rows, 0 on ignored ones.
//
// Running statistics (the kernels see a row one vocab block and one thread's slice at a
// time): a state (m, s) means "max m, and s = sum of exp(z - m) over the values seen".
//   add z:      z > m:  (z, s exp(m - z) + 1)        else (m, s + exp(z - m))
//   merge a, b: M = max(a.m, b.m): (M, a.s exp(a.m - M) + b.s exp(b.m - M))
//   lse = m + log s.
// The empty state is (-inf, 0); adding or merging it is the identity (guarded, so that
// -inf - -inf never produces NaN). The merge is commutative and, in exact arithmetic,
// associative: the kernels fix the merge order so results are deterministic.
// Evaluation adds a running argmax (value, index) per row, merged the same way
// (ce_argmax_merge below: the first index of the maximum wins, as torch.argmax).
//
// bf16 gradient split: the gradient GEMMs take bf16 operands when W is bf16, but a
// dlogit rounded to bf16 keeps only 8 significant bits, and dh = dlogits @ W cancels
// (dlogits sum to zero over a row). So the kernels write two bf16 matrices,
//   hi = bf16(d),  lo = bf16(d - hi)        (d - hi is exact in fp32)
// and the GEMMs sum hi @ W + lo @ W in fp32:  |d - hi - lo| <= 2^-8 |d - hi| <= 2^-16 |d|.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/math/bf16.h"
#include "kernels/math/hd.h"

namespace kmath {

HD bool ce_counted(int32_t target, int ignore_index) { return target != ignore_index; }

// exp and log in the argument's precision (float in the kernels, double on the CPU).
HD float ce_exp(float x) { return expf(x); }
HD float ce_log(float x) { return logf(x); }
HD double ce_exp(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return std::exp(x);
#endif
}
HD double ce_log(double x) {
#if defined(__CUDA_ARCH__)
  return ::log(x);
#else
  return std::log(x);
#endif
}

// log-sum-exp of one row of float logits, two passes in T (the CPU reference uses
// T = double, the same arithmetic as the cross_entropy reference op).
template <class T>
HD T ce_row_lse(const float* z, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j) m = static_cast<T>(z[j]) > m ? static_cast<T>(z[j]) : m;
  T s = 0;
  for (int64_t j = 0; j < n; ++j) s += ce_exp(static_cast<T>(z[j]) - m);
  return m + ce_log(s);
}

// One element of the logits' gradient: coef (exp(z - lse) - [is_target]), coef = g / C.
template <class T>
HD T ce_dlogit(T z, T lse, T coef, bool is_target) {
  return coef * (ce_exp(z - lse) - (is_target ? T(1) : T(0)));
}

// ---- running softmax statistics (fp32, the kernels' representation) ---------------

struct CeStats {
  float m;  // max so far (-inf: nothing seen)
  float s;  // sum of exp(z - m) over the values seen
};

HD CeStats ce_stats_empty() { return {-INFINITY, 0.0f}; }

HD CeStats ce_stats_add(CeStats a, float z) {
  if (z == -INFINITY) return a;  // contributes exp(-inf) = 0
  if (z > a.m) return {z, a.s * ce_exp(a.m - z) + 1.0f};  // a.m = -inf: 0 * 0 + 1
  return {a.m, a.s + ce_exp(z - a.m)};                    // also the NaN path: s turns NaN
}

HD CeStats ce_stats_merge(CeStats a, CeStats b) {
  if (b.m == -INFINITY) return a;
  if (a.m == -INFINITY) return b;
  const float m = a.m > b.m ? a.m : b.m;
  return {m, a.s * ce_exp(a.m - m) + b.s * ce_exp(b.m - m)};
}

HD float ce_stats_lse(CeStats a) { return a.m + ce_log(a.s); }

// ---- running argmax (evaluation: the greedy prediction) ---------------------------
// The state (value, index) of the best logit seen. Order: NaN above every number (as
// torch.argmax), then the larger value, then the smaller index; a total order, so the
// merge is associative and commutative and any merge tree gives the first index of the
// maximum. The empty state (-inf, INT32_MAX) loses to every element, -inf included.

struct CeArgmax {
  float value;
  int32_t index;
};

HD CeArgmax ce_argmax_empty() { return {-INFINITY, 0x7fffffff}; }

HD bool ce_argmax_before(CeArgmax a, CeArgmax b) {  // a ranks above b
  const bool an = a.value != a.value, bn = b.value != b.value;  // NaN tests without <cmath>
  if (an != bn) return an;
  if (!an && a.value != b.value) return a.value > b.value;
  return a.index < b.index;
}

HD CeArgmax ce_argmax_merge(CeArgmax a, CeArgmax b) { return ce_argmax_before(b, a) ? b : a; }

HD CeArgmax ce_argmax_add(CeArgmax a, float z, int32_t index) {
  return ce_argmax_merge(a, CeArgmax{z, index});
}

// d ~= bf16(hi) + bf16(lo) to 2^-16 relative (see the header comment).
HD void ce_split_bf16(float d, uint16_t* hi, uint16_t* lo) {
  const uint16_t h = float_to_bf16_bits(d);
  *hi = h;
  *lo = float_to_bf16_bits(d - bf16_bits_to_float(h));
}

}  // namespace kmath
