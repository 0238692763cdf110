// The tiling plan of the fused lm_head cross-entropy: host-only code beside the
// launchers (kernels/cross_entropy.h), used by the CUDA op (engine/cuda/lm_head_loss.cpp).
// No CUDA header: CPU tests check the plan in every build.
//
// The CUDA op walks [N, V] logits in tiles of `rows` x `vocab_block`: per tile one GEMM
// into an fp32 buffer [rows, vocab_block], then the kernels. Its scratch memory is
//   tile buffer   rows * vocab_block * (4 + 4 if split)   fp32 logits; bf16 hi + lo
//   dh rows       rows * H * 4 if dh_accumulator          fp32 sum over vocab blocks
//   per row       N * kCeBytesPerRow                      m, s, z_t, lse, row loss
// and the plan keeps it within budget = min(N * V * logit_bytes / 24, 256 MiB), 1/24 of
// the materialised logits (the bench's target is 1/20; the rest is slack for the small
// allocations). Among row counts r (powers of two up to 1024, or N itself when N <=
// 1024) it takes the largest whose vocab block (what the budget leaves) is at least
// min(V, max(16, 4 r)): tall enough that W, streamed once per row chunk, is reused r
// times, wide enough that the GEMM has many output tiles. With chunk_rows > 0 the rows
// are given and only the vocab block is planned. The vocab block is a multiple of 16
// (of 128 from 1024 up), at least min(V, 16), at most V. When even that minimum tile
// exceeds the budget (tiny problems) the minimum is used.
// The dW accumulator (fp32 [V, H], only when W needs a gradient) is gradient-sized,
// not logits-sized, and is not part of this budget.
#pragma once
#include <algorithm>
#include <cstdint>

namespace kernels {

inline constexpr int64_t kCeBytesPerRow = 20;
inline constexpr int64_t kCeMaxScratchBytes = int64_t(256) << 20;
inline constexpr int64_t kCeBudgetDivisor = 24;

struct LmHeadTiling {
  int64_t rows = 1;         // tokens per chunk
  int64_t vocab_block = 1;  // vocabulary entries per tile
};

inline int64_t lm_head_budget_bytes(int64_t n, int64_t v, int64_t logit_bytes) {
  const int64_t logits = n * v * logit_bytes / kCeBudgetDivisor;
  return logits < kCeMaxScratchBytes ? logits : kCeMaxScratchBytes;
}

inline int64_t lm_head_scratch_bytes(const LmHeadTiling& t, int64_t n, int64_t h, bool split,
                                     bool dh_accumulator) {
  return t.rows * t.vocab_block * (split ? 8 : 4) + (dh_accumulator ? t.rows * h * 4 : 0) +
         n * kCeBytesPerRow;
}

inline LmHeadTiling plan_lm_head_tiling(int64_t n, int64_t v, int64_t h, int64_t logit_bytes,
                                        bool split, bool dh_accumulator, int64_t chunk_rows) {
  const int64_t budget = lm_head_budget_bytes(n, v, logit_bytes) - n * kCeBytesPerRow;
  const int64_t per_element = split ? 8 : 4;
  auto widest_block = [&](int64_t r) -> int64_t {  // vocab entries the budget leaves
    const int64_t left = budget - (dh_accumulator ? r * h * 4 : 0);
    return left > 0 ? left / (r * per_element) : 0;
  };
  auto at_most_v = [&](int64_t x) { return x < v ? x : v; };
  LmHeadTiling t;
  if (chunk_rows > 0) {
    t.rows = chunk_rows < n ? chunk_rows : n;
  } else {
    const int64_t cap = std::min<int64_t>(n, 1024);
    for (int64_t r = 1;; r = std::min(2 * r, cap)) {  // 1, 2, 4, ..., then cap
      if (widest_block(r) >= at_most_v(std::max<int64_t>(16, 4 * r))) t.rows = r;
      if (r >= cap) break;
    }
  }
  int64_t b = widest_block(t.rows);
  if (b >= v) {
    b = v;
  } else {
    const int64_t quantum = b >= 1024 ? 128 : 16;
    b = b / quantum * quantum;
    const int64_t least = at_most_v(16);
    if (b < least) b = least;
  }
  t.vocab_block = b;
  return t;
}

}  // namespace kernels
