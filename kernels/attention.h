// Launchers for causal grouped-query attention (kernels/attention_forward.cu,
// attention_backward.cu, attention_fallback.cu; the math, tiling and determinism
// argument are in docs/kernels/attention.md). Host-includable: raw device pointers.
//
// Layout (contiguous, token-major, as x @ W^T reshapes them):
//   q, out, dq, dout  [B, T, Hq, D]      k, v, dk, dv  [B, T, Hkv, D]
//   lse               [B, Hq, T] fp32, natural-log log-sum-exp of each softmax row
// Query head h reads KV head h / (Hq / Hkv). scale multiplies q . k (pass 1/sqrt(D)
// for the usual attention). Every tensor of one call has the element type `type`
// (f32 or bf16), except lse, which is always fp32.
//
// Paths: bf16 with D in {64, 128} and 16-byte aligned pointers runs the tensor-core
// kernels (FlashAttention-2 style, mma.sync m16n8k16, fp32 accumulation and softmax
// statistics). Everything else (f32, other head dims up to 256) runs the fallback
// kernels: one warp per row, fp32 math, the same results up to fp32 rounding.
// Both are deterministic: the same inputs give bitwise identical outputs.
//
// Packed sequences: doc_start (device i32 [B, T], or nullptr) gives each token's
// document start; query i then sees keys doc_start[b, i] <= j <= i. Documents must be
// contiguous (doc_start[b, 0] = 0, doc_start[b, t] in {doc_start[b, t - 1], t}:
// kmath::attn_doc_start_valid; the CPU reference checks it, the kernels assume it). The
// tensor-core kernels skip the tiles outside the documents; nullptr runs the plain
// causal kernels, unchanged.
//
// Every launcher checks its preconditions and the launch, throwing kernels::Error;
// an empty problem (B, T or heads 0) queues nothing.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/elementwise.h"  // ElemType
#include "kernels/math/attention_dims.h"

namespace kernels {

// The largest head dim the fallback kernels take (8 values per lane of a warp).
constexpr int64_t kAttentionMaxHeadDim = 256;

// True when (type, shape) runs the tensor-core kernels (pointer alignment aside).
bool attention_fast_path(ElemType type, const kmath::AttentionDims& s);

// out = softmax(scale q k^T + causal mask) v per head; lse as above.
void attention_forward(void* out, float* lse, const void* q, const void* k, const void* v,
                       ElemType type, const kmath::AttentionDims& s, float scale, cudaStream_t stream,
                       const int32_t* doc_start = nullptr);

// Bytes of scratch attention_backward needs (fp32 row statistics, and on the fast path
// the per-split partial dK, dV when the GQA group is split across blocks).
// kv_splits: 0 chooses automatically (from the SM count); otherwise it must divide
// Hq / Hkv. Pass the same value to attention_backward.
size_t attention_backward_workspace_bytes(ElemType type, const kmath::AttentionDims& s,
                                          int kv_splits = 0);

// dq, dk, dv from dout and the forward's q, k, v, out, lse. workspace: at least
// attention_backward_workspace_bytes(type, s, kv_splits) bytes of device memory,
// 16-byte aligned. dq, dk, dv are fully overwritten.
void attention_backward(void* dq, void* dk, void* dv, const void* q, const void* k,
                        const void* v, const void* out, const float* lse, const void* dout,
                        ElemType type, const kmath::AttentionDims& s, float scale, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream, int kv_splits = 0,
                        const int32_t* doc_start = nullptr);

}  // namespace kernels
