// Rotary position embedding math shared by the CPU reference and the CUDA kernels.
//
// Frequencies, for pair i of a head of size d (0 <= i < d/2):
//   inv_freq_i = 1 / theta^(2i/d)
// Llama 3.1 ("llama3") scaling, when factor > 0, with wavelen = 2*pi / inv_freq_i:
//   wavelen < orig/high  -> inv_freq_i              (high frequencies kept)
//   wavelen > orig/low   -> inv_freq_i / factor     (low frequencies divided)
//   otherwise            -> s = (orig/wavelen - low) / (high - low),
//                           inv = (1-s) * inv_freq_i / factor + s * inv_freq_i
// Angle of pair i at position p: p * inv_freq_i. Rotate-half layout: pair i is
// (x[i], x[i + d/2]) and rotates as
//   y1 = x1*cos - x2*sin,  y2 = x2*cos + x1*sin
// i.e. q' = q*cos + rotate_half(q)*sin with rotate_half(x) = cat(-x2, x1).
// The inverse (and the backward pass, since a rotation's Jacobian is the rotation)
// is the same with sin negated.
//
// Everything is fp32 in the order Hugging Face's torch code evaluates it, so the
// frequencies match HF's to the ulp of powf (torch's `a / tensor` is
// `tensor.reciprocal() * a`, hence the reciprocal-multiplies below).
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/math/hd.h"

namespace kmath {

// Rotary embedding frequencies, with optional Llama 3.1 ("llama3") scaling: the one
// struct for them (engine::RopeConfig, the rope op's attribute, is this type).
struct RopeConfig {
  float theta = 10000.0f;
  float scaling_factor = 0.0f;  // 0: no llama3 scaling
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  float original_max_position = 8192.0f;
};

// Inverse frequency of pair i (0 <= i < head_dim/2).
HD float rope_inv_freq(int i, int head_dim, const RopeConfig& p) {
  float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
  float inv = 1.0f / powf(p.theta, exponent);
  if (!(p.scaling_factor > 0.0f)) return inv;

  const float two_pi = 6.283185307179586f;
  float wavelen = (1.0f / inv) * two_pi;
  float low_freq_wavelen = p.original_max_position / p.low_freq_factor;    // above: divided
  float high_freq_wavelen = p.original_max_position / p.high_freq_factor;  // below: kept
  if (wavelen < high_freq_wavelen) return inv;
  if (wavelen > low_freq_wavelen) return inv / p.scaling_factor;
  float smooth = ((1.0f / wavelen) * p.original_max_position - p.low_freq_factor) /
                 (p.high_freq_factor - p.low_freq_factor);
  return (1.0f - smooth) * inv / p.scaling_factor + smooth * inv;
}

// Rotation angle of a pair at `position` (fp32 product, as HF's freqs = pos * inv_freq).
HD float rope_angle(int64_t position, float inv_freq) {
  return static_cast<float>(position) * inv_freq;
}

// Rotates (x1, x2) by the angle whose cosine and sine are (c, s). Pass -s to rotate back.
HD void rope_rotate_pair(float x1, float x2, float c, float s, float* y1, float* y2) {
  *y1 = x1 * c - x2 * s;
  *y2 = x2 * c + x1 * s;
}

}  // namespace kmath
