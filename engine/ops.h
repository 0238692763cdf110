// The op API: typed wrappers over the registry (engine/op.h). Every function runs
// on the inputs' device and is differentiable unless stated. Shapes are row-major;
// "..." means any leading dimensions (total rank <= 4).
#pragma once
#include "engine/op.h"

namespace engine::ops {

// C = op(A) @ op(B), op = optional transpose of the last two dims.
// A [..., M, K] (or [..., K, M] if transpose_a); B [..., K, N] (or [..., N, K]).
// B may be 2-D and is then shared by every batch of A (x @ W^T with W [N, K]).
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a = false, bool transpose_b = false);
Tensor add(const Tensor& a, const Tensor& b);   // same shapes
Tensor mul(const Tensor& a, const Tensor& b);   // same shapes, elementwise
Tensor scale(const Tensor& x, float factor);    // x * factor
Tensor sum(const Tensor& x);                    // all elements -> shape []
Tensor mean(const Tensor& x);                   // all elements -> shape []
Tensor reshape(const Tensor& x, const Shape& shape);  // a free view; gradient reshaped back

// y = w * x / sqrt(mean(x^2 over the last dim) + eps). x [..., D], w [D].
Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps);
// Rotate-half rotary embedding of x [B, T, H, Dh] at positions position_offset + t, or,
// given `positions` (i32 [B, T], packed sequences: restarting at each document), at
// position_offset + positions[b, t].
Tensor rope(const Tensor& x, const RopeConfig& config, int64_t position_offset = 0,
            const Tensor& positions = Tensor());
Tensor silu(const Tensor& x);                         // x * sigmoid(x)
Tensor swiglu(const Tensor& gate, const Tensor& up);  // silu(gate) * up
Tensor softmax(const Tensor& x);                      // over the last dim
// Causal grouped-query attention. q [B, T, Hq, D]; k, v [B, T, Hkv, D]; Hq % Hkv == 0;
// query head h reads KV head h / (Hq / Hkv). scale 0 means 1/sqrt(D). Out [B, T, Hq, D].
// doc_start (packed sequences; i32 [B, T]): the first token of each token's document, so
// query i sees keys doc_start[b, i] <= j <= i. Documents are contiguous: doc_start[b, 0]
// is 0 and doc_start[b, t] is doc_start[b, t - 1] or t (kmath::attn_doc_start_valid).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale = 0.0f,
                 const Tensor& doc_start = Tensor());
// table [V, D] rows gathered by ids (i32, any shape S) -> [S..., D]. Gradient to table only.
Tensor embedding(const Tensor& ids, const Tensor& table);
// Mean over counted rows of -log softmax(logits)[target]. logits [N, V], targets i32 [N];
// rows whose target is ignore_index are not counted; no counted row gives loss 0.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int ignore_index = -100);
// cross_entropy(matmul(h, weight, false, true), targets, ignore_index) as one op whose
// [N, V] logits never exist: h [N, H], weight [V, H] (the lm_head), targets i32 [N].
// Rows are processed in chunks of chunk_rows (0: chosen from a memory budget); the
// backward recomputes each chunk's logits from h, W and the saved per-row logsumexp:
// dh = D W, dW = D^T h (only when weight requires grad), D = dloss / C (softmax - onehot).
Tensor lm_head_cross_entropy(const Tensor& h, const Tensor& weight, const Tensor& targets,
                             int ignore_index = -100, int64_t chunk_rows = 0);
// Per-sequence log-probabilities of the targets from hidden states (DPO), fused like
// lm_head_cross_entropy: h [N, H] holds N / segment_rows sequences of segment_rows rows;
// out f32 [N / segment_rows], out_g = sum over counted rows n of sequence g of
// log softmax(h_n W^T)[t_n], or that sum over the counted rows' count when `mean` (IPO;
// 0 without counted rows). f32 on every device: DPO takes differences of these sums.
Tensor lm_head_logprobs(const Tensor& h, const Tensor& weight, const Tensor& targets,
                        int64_t segment_rows, bool mean = false, int ignore_index = -100,
                        int64_t chunk_rows = 0);
// Inverted dropout: element i kept iff kmath::dropout_keep(seed, offset, i, p) (a
// Philox draw, four elements per block), then scaled by 1/(1-p). The mask is a pure function of (seed, offset), so a recompute
// reproduces it exactly.
Tensor dropout(const Tensor& x, float p, uint64_t seed, uint64_t offset);

// The (Q)LoRA linear layer as one op (PEFT semantics):
//   y = x W^T + s * dropout(x) A^T B^T
// x [..., in]; W [out, in] frozen (dense or NF4, dequantized on the fly, no gradient);
// A [r, in], B [out, r] trainable; s = lora_alpha / r (or / sqrt(r) for rsLoRA).
// Dropout (seeded as in `dropout`) applies only to the input of A. Backward saves
// x, A, B only:  dx = dy W + s dropout'((dy B) A),  dA = s (dy B)^T dropout(x),
// dB = s dy^T (dropout(x) A^T).
struct LoraDropout {
  float p = 0.0f;
  uint64_t seed = 0, offset = 0;
};
Tensor lora_linear(const Tensor& x, std::shared_ptr<const FrozenLinear> frozen, const Tensor& lora_a,
                   const Tensor& lora_b, float scaling, LoraDropout dropout = {});

}  // namespace engine::ops
