// Shape rules shared by the CPU reference and the CUDA implementation of an op, so
// both accept the same inputs and reject the rest with the same one-line message.
#pragma once
#include <string>

#include "engine/op.h"
#include "kernels/math/attention_dims.h"

namespace engine {

struct MatmulDims {
  int64_t batch, m, k, n;
  bool b_shared;  // B is 2-D and used by every batch of A
};

// matmul: C[b] = op(A[b]) @ op(B[b]); A [..., M, K] (or [..., K, M] transposed), B the
// same rank as A with equal batch dims, or 2-D and shared by every batch.
MatmulDims matmul_dims(const Shape& a, const Shape& b, bool transpose_a, bool transpose_b);

// attention: q [B, T, Hq, D], k and v [B, T, Hkv, D], Hq a multiple of Hkv.
kmath::AttentionDims attention_dims(const Shape& q, const Shape& k, const Shape& v);

// rms_norm: x [..., D] with D > 0, weight [D], eps >= 0.
void check_rms_norm(const Shape& x, const Shape& weight, float eps);

// rope: x [B, T, H, Dh] with Dh even, a valid RopeConfig and position offset.
void check_rope(const Shape& x, const OpAttrs& attrs);

// embedding: ids of shape S (rank <= 3) give [S..., d].
Shape embedding_output_shape(const Shape& ids, int64_t d);
// "[i, j]": the multi-index of flat element `n` of `s`, for error messages.
std::string index_text(const Shape& s, int64_t n);

}  // namespace engine
