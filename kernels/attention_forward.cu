// Attention forward, tensor-core path: causal grouped-query attention in the style of
// FlashAttention-2, bf16 in and out, fp32 accumulation and softmax statistics.
//
// Math (per batch b, query head h, KV head g = h / (Hq / Hkv), query row i, key j <= i):
//   S_ij = scale q_i . k_j,   m_i = max_j S_ij,   l_i = sum_j exp(S_ij - m_i)
//   O_i  = sum_j exp(S_ij - m_i) v_j / l_i,      lse_i = m_i + log l_i  (saved, fp32)
// computed with the online softmax of kernels/math/online_softmax.h in base 2 (the
// scores are multiplied by scale * log2 e so each exponential is one exp2).
//
// Shapes: q, out [B, T, Hq, D]; k, v [B, T, Hkv, D]; lse [B, Hq, T]; D in {64, 128}.
//
// Tiling (FwdTiles): one block of 8 warps per (b, h, query tile of 128 rows), 16 rows
// per warp. Q stays in shared memory; key/value tiles of 64 rows stream through it:
//   wait K_j; barrier; issue V_j;  S = Q K_j^T (mma.sync, fp32);
//   wait V_j; barrier; issue K_j+1; mask, online softmax, O += bf16(P) V_j
// so each copy overlaps the other product. Memory is linear in T: a warp holds its
// 16 x 64 scores and 16 x D output in registers, never a T x T matrix.
// Causal skipping: a query tile visits only key tiles that start at or before its last
// row; only tiles crossing the diagonal are masked, and a warp whose rows all precede
// a tile skips its math (but not the block's barriers). Rows and keys past T are
// zero-filled in shared memory: a padded key is masked for every real row because it
// lies above the diagonal, and padded rows are never stored.
// Grid: (B * Hq, query tiles), the heaviest (last) query tiles first.
// Packed sequences (kDoc, doc_start i32 [B, T]): row i sees keys doc_start[i] <= j <= i.
// A query tile starts at the key tile holding its first row's document start (the
// smallest of its rows', doc_start being nondecreasing); a warp skips tiles that end
// before its first row's document start and masks tiles that begin before its last
// row's. Without doc_start (kDoc false) the kernel is the plain causal one.
// The rounding of P to bf16 before P V (as FlashAttention does) and of O on store are
// the two bf16 roundings; the test derives its tolerance from them
// (tests/engine/test_attention_cuda.cpp).
#include "kernels/attention_common.cuh"
#include "kernels/check.h"

namespace kernels {

namespace attn {

namespace {

template <int D, bool kDoc>
__global__ void __launch_bounds__(FwdTiles<D>::kThreads)
    forward_kernel(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q,
                   const bf16* __restrict__ k, const bf16* __restrict__ v, Dims d,
                   float scale_log2, const int32_t* __restrict__ doc_start) {
  using C = FwdTiles<D>;
  constexpr int kBr = C::kBr, kBc = C::kBc, kN = kBc / 8;
  KERNELS_DYNAMIC_SHARED(unsigned char, smem);
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sK = sQ + kBr * D;
  bf16* sV = sK + kBc * D;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gq = lane >> 2, t = lane & 3;
  const int b = blockIdx.x / d.q_heads, h = blockIdx.x % d.q_heads, g = h / d.group();
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kBr;  // heaviest tiles first
  const int64_t q_stride = int64_t(d.q_heads) * D, kv_stride = int64_t(d.kv_heads) * D;
  const bf16* q_tile = q + (int64_t(b) * d.seq + q0) * q_stride + int64_t(h) * D;
  const bf16* k_head = k + int64_t(b) * d.seq * kv_stride + int64_t(g) * D;
  const bf16* v_head = v + int64_t(b) * d.seq * kv_stride + int64_t(g) * D;
  const int n_kt = kmath::attn_key_tiles(q0, kBr, kBc, d.seq);
  const int row0 = q0 + 16 * warp;  // this warp's first query row

  const WarpDocs docs = warp_docs<kDoc, kBc>(doc_start, b, d.seq, q0, row0, gq);
  const int kt_begin = docs.kt_begin;

  load_tile<D, kBr, C::kThreads>(sQ, q_tile, q_stride, d.seq - q0, tid);
  load_tile<D, kBc, C::kThreads>(sK, k_head + kt_begin * kBc * kv_stride, kv_stride,
                                 d.seq - kt_begin * kBc, tid);
  cp_async_commit();

  float o[D / 8][4] = {};
  kmath::OnlineSoftmax<float, true> row[2];  // rows row0 + gq and row0 + gq + 8

  for (int kt = kt_begin; kt < n_kt; ++kt) {
    const int k0 = kt * kBc;
    cp_async_wait<0>();  // K_kt (and Q) have landed
    __syncthreads();     // ... for every thread; every warp is done with V_kt-1
    load_tile<D, kBc, C::kThreads>(sV, v_head + k0 * kv_stride, kv_stride, d.seq - k0, tid);
    cp_async_commit();

    // The warp sees some key of the tile (causally, and inside its rows' documents).
    const bool active = kmath::attn_sees(row0 + 15, k0) &&
                        (!kDoc || kmath::attn_doc_sees_keys(k0, kBc, docs.lo));
    float s[kN][4] = {};
    if (active) gemm_rows<D, kN>(s, sQ, 16 * warp, sK, lane);

    cp_async_wait<0>();  // V_kt has landed
    __syncthreads();     // every warp is done with K_kt
    if (kt + 1 < n_kt) {
      load_tile<D, kBc, C::kThreads>(sK, k_head + (k0 + kBc) * kv_stride, kv_stride,
                                     d.seq - k0 - kBc, tid);
      cp_async_commit();
    }
    if (!active) continue;

    // Scale to base 2, mask above the diagonal, row maxima over the quad of lanes.
    const bool masked = kmath::attn_needs_mask(row0, k0 + kBc - 1) ||
                        (kDoc && kmath::attn_doc_masks_keys(k0, docs.hi));
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < kN; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nb][e] * scale_log2;
        const int j = k0 + nb * 8 + 2 * t + (e & 1);
        if (masked && (j > row0 + gq + 8 * (e >> 1) || (kDoc && j < docs.row[e >> 1])))
          x = -INFINITY;
        s[nb][e] = x;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
      }
    float alpha[2], offset[2], tile_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      alpha[r] = row[r].rescale(tile_max[r]);  // also rescales this lane's partial sum
      offset[r] = row[r].offset();
    }
#pragma unroll
    for (int nb = 0; nb < kN; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(s[nb][e] - offset[e >> 1]);
        s[nb][e] = p;
        tile_sum[e >> 1] += p;
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) row[r].add_sum(tile_sum[r]);  // per-lane partial sums
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[dn][e] *= alpha[e >> 1];
    gemm_p_cols<D, kN>(o, s, sV, lane);  // O += bf16(P) V
  }

  // Full row sums (the quad's partial sums share one running maximum), normalise.
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row[r].sum += __shfl_xor_sync(0xffffffffu, row[r].sum, 1);
    row[r].sum += __shfl_xor_sync(0xffffffffu, row[r].sum, 2);
    inv[r] = 1.0f / row[r].sum;  // >= 1 term exp2(0) = 1: every row sees its own key
  }
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[dn][e] *= inv[e >> 1];
  if (t == 0)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int i = row0 + gq + 8 * r;
      if (i < d.seq) lse[(int64_t(b) * d.q_heads + h) * d.seq + i] = row[r].lse() * kLn2;
    }
  // The warp's own 16 rows of sQ (read by no other warp) stage the output.
  store_rows_bf16<D>(sQ, 16 * warp, o, 1.0f, out + (int64_t(b) * d.seq + row0) * q_stride +
                                                  int64_t(h) * D,
                     q_stride, d.seq - row0, lane);
}

template <int D, bool kDoc>
void launch_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                    const Dims& d, float scale, const int32_t* doc_start, cudaStream_t stream) {
  using C = FwdTiles<D>;
  const int n_qt = ceil_div(d.seq, C::kBr);
  KERNELS_CHECK(n_qt <= 65535, "attention_forward: ", d.seq, " tokens exceed the grid limit");
  CUDA_CHECK(ptx::allow_dynamic_shared(forward_kernel<D, kDoc>, C::kSmem));
  const dim3 grid(unsigned(d.batch) * unsigned(d.q_heads), unsigned(n_qt));
  ptx::launch(forward_kernel<D, kDoc>, grid, C::kThreads, C::kSmem, stream, out, lse, q, k, v, d,
              scale * kLog2e, doc_start);
  CUDA_CHECK_LAUNCH("attention forward_kernel");
}

template <int D>
void launch_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                    const Dims& d, float scale, const int32_t* doc_start, cudaStream_t stream) {
  if (doc_start)
    launch_forward<D, true>(out, lse, q, k, v, d, scale, doc_start, stream);
  else
    launch_forward<D, false>(out, lse, q, k, v, d, scale, nullptr, stream);
}

}  // namespace

void fast_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                  const Dims& d, float scale, const int32_t* doc_start, cudaStream_t stream) {
  if (d.head_dim == 64)
    launch_forward<64>(out, lse, q, k, v, d, scale, doc_start, stream);
  else
    launch_forward<128>(out, lse, q, k, v, d, scale, doc_start, stream);
}

}  // namespace attn

// ---- public launchers ---------------------------------------------------------------

void attn::check_shape(const kmath::AttentionDims& s, ElemType type, const char* op) {
  KERNELS_CHECK(type == ElemType::F32 || type == ElemType::BF16, op,
                ": element type must be f32 or bf16, got ", elem_type_name(type));
  KERNELS_CHECK(s.batch >= 0 && s.seq >= 0 && s.q_heads >= 0 && s.kv_heads >= 0, op,
                ": negative dimension");
  KERNELS_CHECK(s.head_dim >= 1 && s.head_dim <= kAttentionMaxHeadDim, op, ": head dim ",
                s.head_dim, " is outside 1..", kAttentionMaxHeadDim);
  KERNELS_CHECK(s.kv_heads > 0 && s.q_heads % s.kv_heads == 0, op, ": ", s.q_heads,
                " query heads are not a multiple of ", s.kv_heads, " KV heads");
  KERNELS_CHECK(s.seq < (int64_t(1) << 31) && s.batch * s.q_heads < (int64_t(1) << 31) &&
                    s.batch * s.kv_heads * s.q_heads < (int64_t(1) << 31),
                op, ": problem too large for 32-bit tile indices");
}

bool attention_fast_path(ElemType type, const kmath::AttentionDims& s) {
  return type == ElemType::BF16 && (s.head_dim == 64 || s.head_dim == 128);
}

void attention_forward(void* out, float* lse, const void* q, const void* k, const void* v,
                       ElemType type, const kmath::AttentionDims& s, float scale,
                       cudaStream_t stream, const int32_t* doc_start) {
  if (s.batch == 0 || s.seq == 0 || s.q_heads == 0) return;
  attn::check_shape(s, type, "attention_forward");
  KERNELS_CHECK(out && lse && q && k && v, "attention_forward: null pointer");
  const attn::Dims d = s.as<int>();
  if (attention_fast_path(type, s) && attn::aligned16(out) && attn::aligned16(q) &&
      attn::aligned16(k) && attn::aligned16(v))
    attn::fast_forward(static_cast<attn::bf16*>(out), lse, static_cast<const attn::bf16*>(q),
                       static_cast<const attn::bf16*>(k), static_cast<const attn::bf16*>(v), d,
                       scale, doc_start, stream);
  else
    attn::fallback_forward(out, lse, q, k, v, type, d, scale, doc_start, stream);
}

}  // namespace kernels
