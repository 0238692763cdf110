// Per-element activation math shared by the CPU reference and the CUDA kernels.
//   sigmoid(x)   = 1 / (1 + e^-x)
//   silu(x)      = x * sigmoid(x)
//   silu'(x)     = sigmoid(x) * (1 + x * (1 - sigmoid(x)))
//   swiglu(g, u) = silu(g) * u;   d/dg = u * silu'(g),   d/du = silu(g)
//   dropout:       element i of a stream (seed, offset) is kept iff u_i >= p, where u_i
//                  is word i mod 4 of the Philox4x32-10 block at counter offset + i / 4,
//                  as a 24-bit uniform (one block serves four neighbouring elements);
//                  kept values are scaled by 1/(1-p) (inverted dropout, so the
//                  expectation is unchanged).
// All math is fp32; callers convert bf16 inputs to float first.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/math/hd.h"
#include "kernels/math/philox.h"

namespace kmath {

// 1/(1+e^-x) is already stable in fp32: e^-x overflows to inf for very negative x
// and the quotient then rounds to 0, which is the correct limit.
HD float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

HD float silu(float x) { return x * sigmoid(x); }

// d silu / dx.
HD float silu_grad(float x) {
  float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

HD float swiglu(float gate, float up) { return silu(gate) * up; }

// Partial derivatives of swiglu(gate, up); multiply by the upstream gradient.
HD float swiglu_grad_gate(float gate, float up) { return up * silu_grad(gate); }
HD float swiglu_grad_up(float gate) { return silu(gate); }

// Whether element `index` of the dropout stream (seed, offset) survives with drop
// probability p. p == 0 keeps everything (a uniform draw is never below 0).
HD bool dropout_keep(uint64_t seed, uint64_t offset, uint64_t index, float p) {
  return uint_to_unit_float(philox4x32_10(seed, offset + index / 4).v[index % 4]) >= p;
}

// The factor applied to kept elements, 1/(1-p); the caller ensures 0 <= p < 1.
HD float dropout_scale(float p) { return 1.0f / (1.0f - p); }

// Dropout of one element: x * scale when kept, 0 otherwise. The backward pass is
// the same function applied to the gradient with the same (seed, offset, index).
HD float dropout_apply(float x, uint64_t seed, uint64_t offset, uint64_t index, float p,
                       float scale) {
  return dropout_keep(seed, offset, index, p) ? x * scale : 0.0f;
}

// Dropout of the four elements 4 group .. 4 group + 3 from one Philox block: the same
// values as four dropout_apply calls, a quarter of the integer work (the kernels' path).
HD void dropout_apply4(float (&x)[4], uint64_t seed, uint64_t offset, uint64_t group, float p,
                       float scale) {
  const Philox4 r = philox4x32_10(seed, offset + group);
  for (int j = 0; j < 4; ++j) x[j] = uint_to_unit_float(r.v[j]) >= p ? x[j] * scale : 0.0f;
}

}  // namespace kmath
