// Launchers for the embedding kernels (kernels/embedding.cu). Host-includable.
//
// ids: n int32 on the device; table, dtable: [vocab, d] row-major; out, dout: [n, d];
// `type` f32 or bf16 for the float tensors. Launchers check preconditions and launches.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/elementwise.h"  // ElemType

namespace kernels {

// The status word embedding_forward leaves when every id was in range.
constexpr uint64_t kEmbeddingIdsOk = ~uint64_t(0);

// out[i] = table[ids[i]]. Ids outside [0, vocab) are not gathered; instead *status (a
// device word, reset by the launcher) receives the smallest (i << 32 | uint32(ids[i]))
// over the bad positions i: read it back after the launch and decode it with
// embedding_bad_index / embedding_bad_id. n < 2^31.
void embedding_forward(void* out, const int32_t* ids, const void* table, ElemType type, int64_t n,
                       int64_t vocab, int64_t d, uint64_t* status, cudaStream_t stream);
inline int64_t embedding_bad_index(uint64_t status) { return static_cast<int64_t>(status >> 32); }
inline int32_t embedding_bad_id(uint64_t status) {
  return static_cast<int32_t>(static_cast<uint32_t>(status & 0xffffffffu));
}

// Device workspace bytes embedding_backward needs for n ids.
size_t embedding_backward_workspace_bytes(int64_t n, int64_t vocab);

// dtable = 0, then dtable[r] = sum over i with ids[i] == r of dout[i], summed in
// fp32 in increasing i (bitwise reproducible; the same order as the CPU reference).
// Ids must be in [0, vocab) (as embedding_forward checked); others are skipped.
void embedding_backward(void* dtable, const void* dout, const int32_t* ids, ElemType type,
                        int64_t n, int64_t vocab, int64_t d, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream);

}  // namespace kernels
