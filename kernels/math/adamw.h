// The per-element AdamW update shared by the CPU optimizer (engine/optim/adamw.cpp) and
// the fused CUDA kernel (kernels/adamw.cu). PyTorch semantics (torch.optim.AdamW,
// decoupled weight decay), in this exact operation order:
//   p <- p * (1 - lr * wd)
//   m <- b1 * m + (1 - b1) * g
//   v <- b2 * v + ((1 - b2) * g) * g
//   p <- p - (step_size * m) / (sqrt(v) / bias2_sqrt + eps)
// with step_size = lr / (1 - b1^t) and bias2_sqrt = sqrt(1 - b2^t), both computed on
// the host in double and rounded to float once per step (PyTorch's non-capturable
// form: denom = sqrt(v) / sqrt(bias2) + eps).
//
// Every operation is one IEEE-rounded fp32 operation: on the device through the
// explicit __fmul_rn/__fadd_rn/__fsub_rn/__fdiv_rn/__fsqrt_rn intrinsics, which nvcc
// never contracts into FMAs; on the host as plain operators in a translation unit
// built with -ffp-contract=off. So the CPU and the GPU produce bitwise identical
// parameters and moments.
#pragma once
#include <cmath>

#include "kernels/math/hd.h"

namespace kmath {

// Hyper-parameters of one step (the same for every element).
struct AdamWStep {
  float lr = 0.0f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float step_size = 0.0f;   // lr / (1 - beta1^t)
  float bias2_sqrt = 1.0f;  // sqrt(1 - beta2^t)
};

namespace rn {  // single IEEE round-to-nearest operations, never fused
#if defined(__CUDA_ARCH__)
HD float mul(float a, float b) { return __fmul_rn(a, b); }
HD float add(float a, float b) { return __fadd_rn(a, b); }
HD float sub(float a, float b) { return __fsub_rn(a, b); }
HD float div(float a, float b) { return __fdiv_rn(a, b); }
HD float sqrt(float a) { return __fsqrt_rn(a); }
#else
HD float mul(float a, float b) { return a * b; }
HD float add(float a, float b) { return a + b; }
HD float sub(float a, float b) { return a - b; }
HD float div(float a, float b) { return a / b; }
HD float sqrt(float a) { return std::sqrt(a); }
#endif
}  // namespace rn

// Updates one element in place.
HD void adamw_update(float& p, float g, float& m, float& v, const AdamWStep& s) {
  const float decayed = rn::mul(p, rn::sub(1.0f, rn::mul(s.lr, s.weight_decay)));
  const float m1 = rn::add(rn::mul(s.beta1, m), rn::mul(rn::sub(1.0f, s.beta1), g));
  const float v1 = rn::add(rn::mul(s.beta2, v), rn::mul(rn::mul(rn::sub(1.0f, s.beta2), g), g));
  const float denom = rn::add(rn::div(rn::sqrt(v1), s.bias2_sqrt), s.eps);
  p = rn::sub(decayed, rn::div(rn::mul(s.step_size, m1), denom));
  m = m1;
  v = v1;
}

}  // namespace kmath
