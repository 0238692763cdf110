// The dimensions of one causal grouped-query attention problem: the one struct that the
// shape check (engine/op_shapes.h), the CPU reference, the CUDA glue and the kernels
// (kernels/attention.h) share.
//
//   q, out [B, T, Hq, D]   k, v [B, T, Hkv, D]   (token-major)   lse [B, Hq, T]
//   query head h reads KV head h / group, group = Hq / Hkv.
//
// Index is the type of the counts: int64_t on the host, where shapes are; the kernels
// take AttentionDimsOf<int> (the launchers check that every count fits) so that their
// index math stays in 32-bit registers, and form global offsets in int64.
#pragma once
#include <cstdint>

#include "kernels/math/hd.h"

namespace kmath {

template <class Index>
struct AttentionDimsOf {
  Index batch = 0, seq = 0, q_heads = 0, kv_heads = 0, head_dim = 0;

  HD Index group() const { return q_heads / kv_heads; }

  // Element offsets into the token-major buffers and into lse.
  HD int64_t q_at(int64_t b, int64_t t, int64_t h) const {
    return ((b * seq + t) * q_heads + h) * head_dim;
  }
  HD int64_t kv_at(int64_t b, int64_t t, int64_t g) const {
    return ((b * seq + t) * kv_heads + g) * head_dim;
  }
  HD int64_t lse_at(int64_t b, int64_t h, int64_t t) const { return (b * q_heads + h) * seq + t; }

  // The same dimensions with another index type (the caller has checked the range).
  template <class To>
  HD AttentionDimsOf<To> as() const {
    return {To(batch), To(seq), To(q_heads), To(kv_heads), To(head_dim)};
  }
};

using AttentionDims = AttentionDimsOf<int64_t>;

}  // namespace kmath
