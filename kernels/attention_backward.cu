// Attention backward, tensor-core path (bf16, D in {64, 128}), deterministic.
//
// Math (derivation in docs/kernels/attention.md), per (b, h), rows i, keys j <= i:
//   P_ij = exp(S_ij - lse_i)                 recomputed from q, k and the saved lse
//   dV_j = sum_i P_ij dO_i                   dP_ij = dO_i . v_j
//   Delta_i = sum_d dO_id O_id               (= sum_j P_ij dP_ij)
//   dS_ij = P_ij (dP_ij - Delta_i)
//   dQ_i = scale sum_j dS_ij k_j             dK_j = scale sum_i dS_ij q_i
// dK and dV of a KV head sum over the Hq / Hkv query heads of its group.
//
// Kernels, in launch order:
//   delta_kernel  Delta [B, Hq, T] fp32 from the bf16 O and dO (one warp per row).
//   dkdv_kernel   one block of 8 warps per (b, KV head, split, key tile of 128 keys),
//                 16 keys per warp. It streams query tiles of 64 rows (32 where the
//                 device's shared memory per block is too small for 64, see
//                 attention_common.cuh; double-buffered cp.async) over the query heads of
//                 its share of the group, and per tile
//                 each warp computes, all in registers:
//                   S^T = K_w Q^T,  P^T = exp2(S^T scale log2 e - lse log2 e) (masked),
//                   dV_w += bf16(P^T) dO,  dP^T = V_w dO^T,  dS^T = P^T o (dP^T - Delta),
//                   dK_w += bf16(dS^T) Q
//                 Only key-tile-owned accumulators are written, so no atomics: each dK,
//                 dV element is one thread's sum in a fixed order.
//   dq_kernel     one block of 8 warps per (b, query head, query tile of 128 rows),
//                 streaming key tiles of 64 or 32 (as above; double-buffered):
//                 S = Q_w K^T, P from lse, dP = dO_w V^T, dS, dQ_w += bf16(dS) K.
//                 The same P and dS as dkdv_kernel
//                 (recomputed: two extra products instead of dQ atomics).
//   reduce_kernel only when the group is split over several blocks (kv_splits > 1, chosen
//                 when there are too few key tiles to fill the GPU): each split wrote
//                 fp32 partial dK, dV to the workspace; they are summed in split order.
// Every reduction has a fixed order and each output element has one writer, so two
// runs give bitwise identical gradients.
//
// Causal structure: a key tile visits only query tiles that end at or after its first
// key; masking (key > query, or query >= T) applies only on tiles that need it. Padded
// rows (past T) are zero-filled in shared memory and never stored.
// Packed sequences (kDoc, doc_start i32 [B, T]; query i sees keys doc_start[i] <= j <= i,
// equivalently key j is seen by rows j <= i < attn_doc_end(j)): a key tile stops at the
// query tile holding the end of its last key's document, and a lane masks the rows at
// or past its keys' document ends; dq_kernel starts at the key tile of its first row's
// document start and masks keys before its rows' starts, as the forward does.
#include <algorithm>

#include "kernels/attention_common.cuh"
#include "kernels/check.h"
#include "kernels/launch_utils.cuh"

namespace kernels {

namespace attn {

namespace {

// Delta_i = sum_d dO_id O_id, fp32, one warp per (b, i, h) row of the token-major layout.
template <int D>
__global__ void __launch_bounds__(256)
    delta_kernel(float* __restrict__ delta, const bf16* __restrict__ out,
                 const bf16* __restrict__ dout, Dims d) {
  const int lane = threadIdx.x % 32;
  const int64_t r = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  if (r >= int64_t(d.batch) * d.seq * d.q_heads) return;
  const __nv_bfloat162* o2 = reinterpret_cast<const __nv_bfloat162*>(out + r * D);
  const __nv_bfloat162* g2 = reinterpret_cast<const __nv_bfloat162*>(dout + r * D);
  float s = 0.0f;
#pragma unroll
  for (int c = lane; c < D / 2; c += 32) {
    const float2 o = __bfloat1622float2(o2[c]), g = __bfloat1622float2(g2[c]);
    s = fmaf(o.x, g.x, s);
    s = fmaf(o.y, g.y, s);
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) {
    const int64_t bt = r / d.q_heads;
    const int h = int(r % d.q_heads), b = int(bt / d.seq), i = int(bt % d.seq);
    delta[(int64_t(b) * d.q_heads + h) * d.seq + i] = s;
  }
}

template <int D, int kStream, bool kDoc>
__global__ void __launch_bounds__(DkvTiles<D, kStream>::kThreads)
    dkdv_kernel(bf16* __restrict__ dk, bf16* __restrict__ dv, float* __restrict__ dk_part,
                float* __restrict__ dv_part, const bf16* __restrict__ q,
                const bf16* __restrict__ k, const bf16* __restrict__ v,
                const bf16* __restrict__ dout, const float* __restrict__ lse,
                const float* __restrict__ delta, Dims d, int splits, float scale,
                const int32_t* __restrict__ doc_start) {
  using C = DkvTiles<D, kStream>;
  constexpr int kBr = C::kBr, kBc = C::kBc, kN = kBr / 8;
  KERNELS_DYNAMIC_SHARED(unsigned char, smem);
  bf16* sK = reinterpret_cast<bf16*>(smem);
  bf16* sV = sK + kBc * D;
  bf16* sQ = sV + kBc * D;       // [2][kBr][D]
  bf16* sdO = sQ + 2 * kBr * D;  // [2][kBr][D]
  float* sLse = reinterpret_cast<float*>(sdO + 2 * kBr * D);  // [2][kBr]
  float* sDelta = sLse + 2 * kBr;                             // [2][kBr]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gq = lane >> 2, t = lane & 3;
  const int split = blockIdx.x % splits, bg = blockIdx.x / splits;
  const int b = bg / d.kv_heads, g = bg % d.kv_heads;
  const int k0 = blockIdx.y * kBc;  // key tile 0 (the most work) first
  const int heads = d.group() / splits, h_begin = g * d.group() + split * heads;
  const int qt_begin = kmath::attn_first_query_tile(k0, kBr);
  const int key0 = k0 + 16 * warp;  // this warp's first key
  // kDoc: rows past the tile's last document end see none of its keys; this warp's first
  // and last keys' and this lane's two keys' document ends (keys past T clamp to the last).
  int q_end = d.seq, end_lo = 0, end_hi = 0, end_key[2] = {0, 0};
  if constexpr (kDoc) {
    const int32_t* ds = doc_start + int64_t(b) * d.seq;
    auto end_of = [&](int j) { return kmath::attn_doc_end(ds, d.seq, j < d.seq ? j : d.seq - 1); };
    q_end = end_of(k0 + kBc - 1);
    end_lo = end_of(key0);
    end_hi = end_of(key0 + 15);
    end_key[0] = end_of(key0 + gq);
    end_key[1] = end_of(key0 + gq + 8);
  }
  const int n_qt = ceil_div(q_end, kBr) - qt_begin;
  const int steps = heads * n_qt;
  const int64_t q_stride = int64_t(d.q_heads) * D, kv_stride = int64_t(d.kv_heads) * D;
  const int64_t kv_tile = (int64_t(b) * d.seq + k0) * kv_stride + int64_t(g) * D;
  const float scale_log2 = scale * kLog2e;

  // Step s: query head h_begin + s / n_qt, query tile qt_begin + s % n_qt.
  auto issue = [&](int s, int buf) {
    const int h = h_begin + s / n_qt, q0 = (qt_begin + s % n_qt) * kBr;
    const int64_t rows = (int64_t(b) * d.seq + q0) * q_stride + int64_t(h) * D;
    load_tile<D, kBr, C::kThreads>(sQ + buf * kBr * D, q + rows, q_stride, d.seq - q0, tid);
    load_tile<D, kBr, C::kThreads>(sdO + buf * kBr * D, dout + rows, q_stride, d.seq - q0, tid);
    const int64_t stats = (int64_t(b) * d.q_heads + h) * d.seq + q0;
    if (tid < kBr)
      cp_async4(sLse + buf * kBr + tid, lse + stats + (q0 + tid < d.seq ? tid : 0),
                q0 + tid < d.seq);
    else if (tid < 2 * kBr)
      cp_async4(sDelta + buf * kBr + tid - kBr,
                delta + stats + (q0 + tid - kBr < d.seq ? tid - kBr : 0), q0 + tid - kBr < d.seq);
  };

  load_tile<D, kBc, C::kThreads>(sK, k + kv_tile, kv_stride, d.seq - k0, tid);
  load_tile<D, kBc, C::kThreads>(sV, v + kv_tile, kv_stride, d.seq - k0, tid);
  issue(0, 0);
  cp_async_commit();

  float acc_k[D / 8][4] = {}, acc_v[D / 8][4] = {};
  for (int s = 0; s < steps; ++s) {
    const int buf = s & 1;
    if (s + 1 < steps) {
      issue(s + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int q0 = (qt_begin + s % n_qt) * kBr;
    // Some query sees some key of this warp (causally, and inside the keys' documents).
    if (kmath::attn_sees(q0 + kBr - 1, key0) &&
        (!kDoc || kmath::attn_doc_seen_by_rows(q0, end_hi))) {
      const bf16* tQ = sQ + buf * kBr * D;
      const bf16* tdO = sdO + buf * kBr * D;
      const float* tLse = sLse + buf * kBr;
      const float* tDelta = sDelta + buf * kBr;
      const bool masked = kmath::attn_needs_mask(q0, key0 + 15) || q0 + kBr > d.seq ||
                          (kDoc && kmath::attn_doc_masks_rows(q0, kBr, end_lo));
      float p[kN][4] = {}, ds[kN][4] = {};
      gemm_rows<D, kN>(p, sK, 16 * warp, tQ, lane);  // S^T = K_w Q^T
#pragma unroll
      for (int nb = 0; nb < kN; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = nb * 8 + 2 * t + (e & 1), i = q0 + c, j = key0 + gq + 8 * (e >> 1);
          const float x = exp2f(p[nb][e] * scale_log2 - tLse[c] * kLog2e);
          p[nb][e] =
              masked && (j > i || i >= d.seq || (kDoc && i >= end_key[e >> 1])) ? 0.0f : x;
        }
      gemm_p_cols<D, kN>(acc_v, p, tdO, lane);        // dV_w += bf16(P^T) dO
      gemm_rows<D, kN>(ds, sV, 16 * warp, tdO, lane);  // dP^T = V_w dO^T
#pragma unroll
      for (int nb = 0; nb < kN; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) ds[nb][e] = p[nb][e] * (ds[nb][e] - tDelta[nb * 8 + 2 * t + (e & 1)]);
      gemm_p_cols<D, kN>(acc_k, ds, tQ, lane);  // dK_w += bf16(dS^T) Q
    }
    __syncthreads();  // every warp is done with buffer `buf` before it is refilled
  }

  const int valid = d.seq - key0;
  if (splits == 1) {  // the warp's own rows of sK, sV stage the bf16 rows
    store_rows_bf16<D>(sK, 16 * warp, acc_k, scale, dk + kv_tile + 16 * warp * kv_stride,
                       kv_stride, valid, lane);
    store_rows_bf16<D>(sV, 16 * warp, acc_v, 1.0f, dv + kv_tile + 16 * warp * kv_stride,
                       kv_stride, valid, lane);
    return;
  }
  const int64_t part = int64_t(split) * d.batch * d.seq * kv_stride + kv_tile;
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = 16 * warp + gq + 8 * hf;
      if (k0 + r >= d.seq) continue;
      const int64_t at = part + r * kv_stride + dn * 8 + 2 * t;
      *reinterpret_cast<float2*>(dk_part + at) =
          make_float2(acc_k[dn][2 * hf] * scale, acc_k[dn][2 * hf + 1] * scale);
      *reinterpret_cast<float2*>(dv_part + at) = make_float2(acc_v[dn][2 * hf], acc_v[dn][2 * hf + 1]);
    }
}

template <int D, int kStream, bool kDoc>
__global__ void __launch_bounds__(DqTiles<D, kStream>::kThreads)
    dq_kernel(bf16* __restrict__ dq, const bf16* __restrict__ q, const bf16* __restrict__ k,
              const bf16* __restrict__ v, const bf16* __restrict__ dout,
              const float* __restrict__ lse, const float* __restrict__ delta, Dims d,
              float scale, const int32_t* __restrict__ doc_start) {
  using C = DqTiles<D, kStream>;
  constexpr int kBr = C::kBr, kBc = C::kBc, kN = kBc / 8;
  KERNELS_DYNAMIC_SHARED(unsigned char, smem);
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sdO = sQ + kBr * D;
  bf16* sK = sdO + kBr * D;      // [2][kBc][D]
  bf16* sV = sK + 2 * kBc * D;   // [2][kBc][D]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gq = lane >> 2, t = lane & 3;
  const int b = blockIdx.x / d.q_heads, h = blockIdx.x % d.q_heads, g = h / d.group();
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kBr;  // heaviest tiles first
  const int64_t q_stride = int64_t(d.q_heads) * D, kv_stride = int64_t(d.kv_heads) * D;
  const int64_t q_rows = (int64_t(b) * d.seq + q0) * q_stride + int64_t(h) * D;
  const int64_t kv_head = int64_t(b) * d.seq * kv_stride + int64_t(g) * D;
  const int n_kt = kmath::attn_key_tiles(q0, kBr, kBc, d.seq);
  const int row0 = q0 + 16 * warp;
  const float scale_log2 = scale * kLog2e;

  const WarpDocs docs = warp_docs<kDoc, kBc>(doc_start, b, d.seq, q0, row0, gq);
  const int kt_begin = docs.kt_begin;

  // Row statistics of this lane's two rows (rows past T get zeros; never stored).
  float lse2[2], dl[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = row0 + gq + 8 * r;
    const int64_t at = (int64_t(b) * d.q_heads + h) * d.seq + i;
    lse2[r] = i < d.seq ? lse[at] * kLog2e : 0.0f;
    dl[r] = i < d.seq ? delta[at] : 0.0f;
  }

  auto issue = [&](int kt, int buf) {
    const int k0 = kt * kBc;
    load_tile<D, kBc, C::kThreads>(sK + buf * kBc * D, k + kv_head + k0 * kv_stride, kv_stride,
                                   d.seq - k0, tid);
    load_tile<D, kBc, C::kThreads>(sV + buf * kBc * D, v + kv_head + k0 * kv_stride, kv_stride,
                                   d.seq - k0, tid);
  };
  load_tile<D, kBr, C::kThreads>(sQ, q + q_rows, q_stride, d.seq - q0, tid);
  load_tile<D, kBr, C::kThreads>(sdO, dout + q_rows, q_stride, d.seq - q0, tid);
  issue(kt_begin, 0);
  cp_async_commit();

  float acc[D / 8][4] = {};
  for (int kt = kt_begin; kt < n_kt; ++kt) {
    const int buf = (kt - kt_begin) & 1, k0 = kt * kBc;
    if (kt + 1 < n_kt) {
      issue(kt + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    // The warp sees some key of the tile (causally, and inside its rows' documents).
    if (kmath::attn_sees(row0 + 15, k0) && (!kDoc || kmath::attn_doc_sees_keys(k0, kBc, docs.lo))) {
      const bf16* tK = sK + buf * kBc * D;
      const bf16* tV = sV + buf * kBc * D;
      const bool masked = kmath::attn_needs_mask(row0, k0 + kBc - 1) ||
                          (kDoc && kmath::attn_doc_masks_keys(k0, docs.hi));
      float p[kN][4] = {}, ds[kN][4] = {};
      gemm_rows<D, kN>(p, sQ, 16 * warp, tK, lane);    // S = Q_w K^T
      gemm_rows<D, kN>(ds, sdO, 16 * warp, tV, lane);  // dP = dO_w V^T
#pragma unroll
      for (int nb = 0; nb < kN; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e >> 1, j = k0 + nb * 8 + 2 * t + (e & 1), i = row0 + gq + 8 * r;
          const float x = exp2f(p[nb][e] * scale_log2 - lse2[r]);
          const float pm = masked && (j > i || (kDoc && j < docs.row[r])) ? 0.0f : x;
          ds[nb][e] = pm * (ds[nb][e] - dl[r]);
        }
      gemm_p_cols<D, kN>(acc, ds, tK, lane);  // dQ_w += bf16(dS) K
    }
    __syncthreads();  // every warp is done with buffer `buf` before it is refilled
  }
  store_rows_bf16<D>(sQ, 16 * warp, acc, scale, dq + q_rows + 16 * warp * q_stride, q_stride,
                     d.seq - row0, lane);
}

__global__ void reduce_kernel(bf16* __restrict__ dk, bf16* __restrict__ dv,
                              const float* __restrict__ dk_part,
                              const float* __restrict__ dv_part, int64_t n, int splits) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    float a = 0.0f, c = 0.0f;
    for (int s = 0; s < splits; ++s) {  // split order: fixed
      a += dk_part[s * n + e];
      c += dv_part[s * n + e];
    }
    dk[e] = __float2bfloat16_rn(a);
    dv[e] = __float2bfloat16_rn(c);
  }
}

using detail::sm_count;

// Splits of the GQA group for dkdv_kernel: the smallest divisor of the group that gives
// at least 4 blocks per SM (1 when the key tiles alone do), keeping the fp32 partials
// under 2 GiB.
int choose_splits(const kmath::AttentionDims& s) {
  const int64_t group = s.group();
  const int64_t blocks = ceil_div(int(s.seq), DkvTiles<128>::kBc) * s.batch * s.kv_heads;
  const int64_t target = 4 * int64_t(sm_count());
  const int64_t per_split = 2 * s.batch * s.seq * s.kv_heads * s.head_dim * 4;  // bytes
  int best = 1;
  for (int64_t c = 1; c <= group; ++c) {
    if (group % c || (c > 1 && c * per_split > (int64_t(2) << 30))) continue;
    best = int(c);
    if (blocks * c >= target) break;
  }
  return best;
}

size_t round16(size_t bytes) { return (bytes + 15) / 16 * 16; }

template <int D, int kStream, bool kDoc>
void launch_dkdv(bf16* dk, bf16* dv, float* dk_part, float* dv_part, const bf16* q,
                 const bf16* k, const bf16* v, const float* lse, const bf16* dout,
                 const float* delta, const Dims& d, float scale, int splits,
                 const int32_t* doc_start, cudaStream_t stream) {
  using Kv = DkvTiles<D, kStream>;
  CUDA_CHECK(ptx::allow_dynamic_shared(dkdv_kernel<D, kStream, kDoc>, Kv::kSmem));
  const dim3 grid(unsigned(d.batch) * unsigned(d.kv_heads) * unsigned(splits),
                  unsigned(ceil_div(d.seq, Kv::kBc)));
  ptx::launch(dkdv_kernel<D, kStream, kDoc>, grid, Kv::kThreads, Kv::kSmem, stream, dk, dv,
              dk_part, dv_part, q, k, v, dout, lse, delta, d, splits, scale, doc_start);
  CUDA_CHECK_LAUNCH("attention dkdv_kernel");
}

template <int D, int kStream, bool kDoc>
void launch_dq(bf16* dq, const bf16* q, const bf16* k, const bf16* v, const float* lse,
               const bf16* dout, const float* delta, const Dims& d, float scale,
               const int32_t* doc_start, cudaStream_t stream) {
  using Q = DqTiles<D, kStream>;
  CUDA_CHECK(ptx::allow_dynamic_shared(dq_kernel<D, kStream, kDoc>, Q::kSmem));
  const dim3 grid(unsigned(d.batch) * unsigned(d.q_heads), unsigned(ceil_div(d.seq, Q::kBr)));
  ptx::launch(dq_kernel<D, kStream, kDoc>, grid, Q::kThreads, Q::kSmem, stream, dq, q, k, v,
              dout, lse, delta, d, scale, doc_start);
  CUDA_CHECK_LAUNCH("attention dq_kernel");
}

// The dK/dV and dQ kernels with the document mask compiled in or out.
template <int D, int kStream>
void launch_dkdv(bf16* dk, bf16* dv, float* dk_part, float* dv_part, const bf16* q,
                 const bf16* k, const bf16* v, const float* lse, const bf16* dout,
                 const float* delta, const Dims& d, float scale, int splits,
                 const int32_t* doc_start, cudaStream_t stream) {
  if (doc_start)
    launch_dkdv<D, kStream, true>(dk, dv, dk_part, dv_part, q, k, v, lse, dout, delta, d, scale,
                                  splits, doc_start, stream);
  else
    launch_dkdv<D, kStream, false>(dk, dv, dk_part, dv_part, q, k, v, lse, dout, delta, d, scale,
                                   splits, nullptr, stream);
}

template <int D, int kStream>
void launch_dq(bf16* dq, const bf16* q, const bf16* k, const bf16* v, const float* lse,
               const bf16* dout, const float* delta, const Dims& d, float scale,
               const int32_t* doc_start, cudaStream_t stream) {
  if (doc_start)
    launch_dq<D, kStream, true>(dq, q, k, v, lse, dout, delta, d, scale, doc_start, stream);
  else
    launch_dq<D, kStream, false>(dq, q, k, v, lse, dout, delta, d, scale, nullptr, stream);
}

template <int D>
void launch_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* q, const bf16* k, const bf16* v,
                     const bf16* out, const float* lse, const bf16* dout, const Dims& d,
                     float scale, const int32_t* doc_start, float* delta, float* part, int splits,
                     cudaStream_t stream) {
  const int64_t rows = int64_t(d.batch) * d.seq * d.q_heads;
  ptx::launch(delta_kernel<D>, unsigned((rows + 7) / 8), 256, 0, stream, delta, out, dout, d);
  CUDA_CHECK_LAUNCH("attention delta_kernel");

  // The streamed tiles: 64 rows where they fit the device's shared memory per block,
  // else 32. Where 64 fits every GPU (D = 64) the 32-row kernels are not even compiled.
  const int smem = detail::max_shared_per_block();
  constexpr bool kv64_everywhere = DkvTiles<D, 64>::kSmem <= kMinSharedPerBlock;
  constexpr bool q64_everywhere = DqTiles<D, 64>::kSmem <= kMinSharedPerBlock;
  const int64_t kv_elems = int64_t(d.batch) * d.seq * d.kv_heads * D;
  float* dk_part = splits > 1 ? part : nullptr;
  float* dv_part = splits > 1 ? part + splits * kv_elems : nullptr;
  if (kv64_everywhere || DkvTiles<D, 64>::kSmem <= smem)
    launch_dkdv<D, 64>(dk, dv, dk_part, dv_part, q, k, v, lse, dout, delta, d, scale, splits,
                       doc_start, stream);
  else if constexpr (!kv64_everywhere)
    launch_dkdv<D, 32>(dk, dv, dk_part, dv_part, q, k, v, lse, dout, delta, d, scale, splits,
                       doc_start, stream);
  if (splits > 1) {
    const int64_t blocks = std::min<int64_t>((kv_elems + 255) / 256, 16 * int64_t(sm_count()));
    ptx::launch(reduce_kernel, unsigned(blocks), 256, 0, stream, dk, dv, dk_part, dv_part, kv_elems,
                splits);
    CUDA_CHECK_LAUNCH("attention reduce_kernel");
  }

  if (q64_everywhere || DqTiles<D, 64>::kSmem <= smem)
    launch_dq<D, 64>(dq, q, k, v, lse, dout, delta, d, scale, doc_start, stream);
  else if constexpr (!q64_everywhere)
    launch_dq<D, 32>(dq, q, k, v, lse, dout, delta, d, scale, doc_start, stream);
}

}  // namespace

}  // namespace attn

namespace {

int resolve_splits(const kmath::AttentionDims& s, int kv_splits) {
  const int64_t group = s.group();
  if (kv_splits == 0) return attn::choose_splits(s);
  KERNELS_CHECK(kv_splits > 0 && group % kv_splits == 0, "attention_backward: kv_splits ",
                kv_splits, " does not divide the group of ", group, " query heads per KV head");
  return kv_splits;
}

}  // namespace

size_t attention_backward_workspace_bytes(ElemType type, const kmath::AttentionDims& s,
                                          int kv_splits) {
  if (s.batch == 0 || s.seq == 0 || s.q_heads == 0) return 0;
  attn::check_shape(s, type, "attention_backward");
  const size_t delta = attn::round16(size_t(s.batch * s.q_heads * s.seq) * 4);
  if (!attention_fast_path(type, s)) return delta;
  const int splits = resolve_splits(s, kv_splits);
  if (splits == 1) return delta;
  return delta + 2 * size_t(splits) * size_t(s.batch * s.seq * s.kv_heads * s.head_dim) * 4;
}

void attention_backward(void* dq, void* dk, void* dv, const void* q, const void* k,
                        const void* v, const void* out, const float* lse, const void* dout,
                        ElemType type, const kmath::AttentionDims& s, float scale, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream, int kv_splits,
                        const int32_t* doc_start) {
  if (s.batch == 0 || s.seq == 0 || s.q_heads == 0) return;
  attn::check_shape(s, type, "attention_backward");
  KERNELS_CHECK(dq && dk && dv && q && k && v && out && lse && dout && workspace,
                "attention_backward: null pointer");
  const size_t need = attention_backward_workspace_bytes(type, s, kv_splits);
  KERNELS_CHECK(workspace_bytes >= need && attn::aligned16(workspace),
                "attention_backward: workspace of ", workspace_bytes, " bytes at ", workspace,
                " is smaller than the ", need, " needed or not 16-byte aligned");
  const attn::Dims d = s.as<int>();
  float* delta = static_cast<float*>(workspace);
  const bool aligned = attn::aligned16(dq) && attn::aligned16(dk) && attn::aligned16(dv) &&
                       attn::aligned16(q) && attn::aligned16(k) && attn::aligned16(v) &&
                       attn::aligned16(out) && attn::aligned16(dout);
  if (!attention_fast_path(type, s) || !aligned) {
    attn::fallback_backward(dq, dk, dv, q, k, v, lse, dout, type, d, scale, doc_start, delta,
                            stream);
    return;
  }
  using attn::bf16;
  float* part = reinterpret_cast<float*>(static_cast<char*>(workspace) +
                                         attn::round16(size_t(s.batch * s.q_heads * s.seq) * 4));
  const int splits = resolve_splits(s, kv_splits);
  auto args = [&](auto launch) {
    launch(static_cast<bf16*>(dq), static_cast<bf16*>(dk), static_cast<bf16*>(dv),
           static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v),
           static_cast<const bf16*>(out), lse, static_cast<const bf16*>(dout), d, scale, doc_start,
           delta, part, splits, stream);
  };
  if (s.head_dim == 64)
    args(attn::launch_backward<64>);
  else
    args(attn::launch_backward<128>);
}

}  // namespace kernels
