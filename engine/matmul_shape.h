// The shape rules of matmul, shared by its CPU and CUDA implementations:
// C[b] = op(A[b]) @ op(B[b]); A [..., M, K] (or [..., K, M] transposed), B the same
// rank as A with equal batch dims, or 2-D and shared by every batch.
#pragma once
#include "engine/dtype.h"

namespace engine {

struct MatmulDims {
  int64_t batch, m, k, n;
  bool b_shared;  // B is 2-D and used by every batch of A
};

// Throws engine::Error naming both shapes when they do not fit.
MatmulDims matmul_dims(const Shape& a, const Shape& b, bool transpose_a, bool transpose_b);

}  // namespace engine
