// Attention fallback path: f32 or bf16 storage, any head dim up to 256, fp32 math.
// Serves f32 tensors (which the tensor-core path does not take), head dims other than
// 64 and 128, and misaligned views. Same math as the CPU reference
// (engine/cpu/attention.cpp) and the same outputs as the fast path up to rounding:
//
//   forward   S_ij = scale q_i . k_j (j <= i); online softmax one key at a time
//             (kmath::OnlineSoftmax<float>, the function the CPU reference calls);
//             O_i = sum_j P_ij v_j;  lse_i = m_i + log l_i
//   backward  P_ij = exp(S_ij - lse_i), dP_ij = dO_i . v_j,
//             Delta_i = sum_j P_ij dP_ij,  dS_ij = P_ij (dP_ij - Delta_i),
//             dQ_i = scale sum_j dS_ij k_j,  dK_j = scale sum_{h in group, i >= j} dS_ij q_i,
//             dV_j = sum_{h in group, i >= j} P_ij dO_i
//
// Delta is taken as sum_j P_ij dP_ij rather than the fast path's rowsum(dO o O): equal
// in exact arithmetic, but this form does not see the rounding of the stored output
// (bf16 O would cost up to 2^-8 relative in Delta, which the op harness's bf16 tolerance,
// made for the final rounding only, does not allow). It costs one more pass over the
// keys, which this path can afford.
//
// Layout: one warp per row (a query row for forward, Delta and dQ; a key row of a KV
// head for dK and dV); lane l holds elements l, l + 32, ... of each D-vector. Dot
// products reduce with an xor butterfly, so every lane ends with the same bits and the
// order is fixed: the results are deterministic, and S is computed by the same code in
// every kernel (the same bits in forward and backward; with one key, P is exactly 1).
// 4 warps per block; every sum runs in a fixed loop order, no atomics.
//
// Packed sequences (doc_start, i32 [B, T], not null): row i sums over keys
// doc_start[i] <= j <= i, and key j over rows j <= i < attn_doc_end(j) (the same set,
// kernels/math/attention_tiles.h). Without it the loops start at 0 and end at T.
#include "kernels/attention_common.cuh"
#include "kernels/check.h"
#include "kernels/math/attention_tiles.h"

namespace kernels::attn {

namespace {

constexpr int kWarps = 4, kThreads = 32 * kWarps;
constexpr int kPerLane = int(kAttentionMaxHeadDim / 32);

struct F32Elem {
  using S = float;
  __device__ static float load(S x) { return x; }
  __device__ static S store(float f) { return f; }
};
struct BF16Elem {
  using S = bf16;
  __device__ static float load(S x) { return __bfloat162float(x); }
  __device__ static S store(float f) { return __float2bfloat16_rn(f); }
};

using Vec = float[kPerLane];

template <class E>
__device__ __forceinline__ void load_vec(Vec& r, const typename E::S* p, int n, int lane) {
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {
    const int e = lane + 32 * c;
    r[c] = e < n ? E::load(p[e]) : 0.0f;
  }
}

template <class E>
__device__ __forceinline__ void store_vec(typename E::S* p, const Vec& r, float mul, int n,
                                          int lane) {
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {
    const int e = lane + 32 * c;
    if (e < n) p[e] = E::store(r[c] * mul);
  }
}

// a . b over the warp; every lane returns the same value.
__device__ __forceinline__ float warp_dot(const Vec& a, const Vec& b) {
  float s = 0.0f;
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) s = fmaf(a[c], b[c], s);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
  return s;
}

// The score S_ij, written once so that every kernel rounds it identically (__fmul_rn:
// never contracted into a following subtraction).
__device__ __forceinline__ float score(const Vec& qi, const Vec& kj, float scale) {
  return __fmul_rn(warp_dot(qi, kj), scale);
}

// Row r of the [B, Hq, T] statistics: its batch, head and token.
// j0: its first visible key (its document's start, or 0).
struct QueryRow {
  int b, h, i, j0;
  __device__ QueryRow(int64_t r, const Dims& d, const int32_t* doc_start)
      : b(int(r / (int64_t(d.q_heads) * d.seq))),
        h(int(r / d.seq % d.q_heads)),
        i(int(r % d.seq)),
        j0(doc_start ? doc_start[int64_t(b) * d.seq + i] : 0) {}
};

template <class E>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(typename E::S* out, float* lse, const typename E::S* q,
                   const typename E::S* k, const typename E::S* v, Dims d, float scale,
                   const int32_t* doc_start) {
  const int lane = threadIdx.x % 32;
  const int64_t r = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (r >= int64_t(d.batch) * d.q_heads * d.seq) return;
  const QueryRow row(r, d, doc_start);
  const int g = row.h / d.group(), n = d.head_dim;
  Vec qi, kj, vj, acc = {};
  load_vec<E>(qi, q + d.q_at(row.b, row.i, row.h), n, lane);
  kmath::OnlineSoftmax<float> st;
  for (int j = row.j0; j <= row.i; ++j) {
    load_vec<E>(kj, k + d.kv_at(row.b, j, g), n, lane);
    load_vec<E>(vj, v + d.kv_at(row.b, j, g), n, lane);
    const float s = score(qi, kj, scale);
    const float a = st.rescale(s);
    const float p = st.exp(s - st.offset());
    st.add_sum(p);
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) acc[c] = fmaf(p, vj[c], acc[c] * a);
  }
  store_vec<E>(out + d.q_at(row.b, row.i, row.h), acc, 1.0f / st.sum, n, lane);
  if (lane == 0) lse[r] = st.lse();
}

// Delta_i = sum_j P_ij dP_ij.
template <class E>
__global__ void __launch_bounds__(kThreads)
    delta_kernel(float* delta, const typename E::S* q, const typename E::S* k,
                 const typename E::S* v, const float* lse, const typename E::S* dout, Dims d,
                 float scale, const int32_t* doc_start) {
  const int lane = threadIdx.x % 32;
  const int64_t r = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (r >= int64_t(d.batch) * d.q_heads * d.seq) return;
  const QueryRow row(r, d, doc_start);
  const int g = row.h / d.group(), n = d.head_dim;
  Vec qi, doi, kj, vj;
  load_vec<E>(qi, q + d.q_at(row.b, row.i, row.h), n, lane);
  load_vec<E>(doi, dout + d.q_at(row.b, row.i, row.h), n, lane);
  const float l = lse[r];
  float sum = 0.0f;
  for (int j = row.j0; j <= row.i; ++j) {
    load_vec<E>(kj, k + d.kv_at(row.b, j, g), n, lane);
    load_vec<E>(vj, v + d.kv_at(row.b, j, g), n, lane);
    const float p = expf(score(qi, kj, scale) - l);
    sum = fmaf(p, warp_dot(doi, vj), sum);
  }
  if (lane == 0) delta[r] = sum;
}

// dQ_i = scale sum_j P_ij (dP_ij - Delta_i) k_j.
template <class E>
__global__ void __launch_bounds__(kThreads)
    dq_kernel(typename E::S* dq, const typename E::S* q, const typename E::S* k,
              const typename E::S* v, const float* lse, const float* delta,
              const typename E::S* dout, Dims d, float scale, const int32_t* doc_start) {
  const int lane = threadIdx.x % 32;
  const int64_t r = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (r >= int64_t(d.batch) * d.q_heads * d.seq) return;
  const QueryRow row(r, d, doc_start);
  const int g = row.h / d.group(), n = d.head_dim;
  Vec qi, doi, kj, vj, acc = {};
  load_vec<E>(qi, q + d.q_at(row.b, row.i, row.h), n, lane);
  load_vec<E>(doi, dout + d.q_at(row.b, row.i, row.h), n, lane);
  const float l = lse[r], dl = delta[r];
  for (int j = row.j0; j <= row.i; ++j) {
    load_vec<E>(kj, k + d.kv_at(row.b, j, g), n, lane);
    load_vec<E>(vj, v + d.kv_at(row.b, j, g), n, lane);
    const float p = expf(score(qi, kj, scale) - l);
    const float ds = p * (warp_dot(doi, vj) - dl);
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) acc[c] = fmaf(ds, kj[c], acc[c]);
  }
  store_vec<E>(dq + d.q_at(row.b, row.i, row.h), acc, scale, n, lane);
}

// dK_j, dV_j of KV head g: the query heads of its group in order, then rows i >= j.
template <class E>
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(typename E::S* dk, typename E::S* dv, const typename E::S* q,
                const typename E::S* k, const typename E::S* v, const float* lse,
                const float* delta, const typename E::S* dout, Dims d, float scale,
                const int32_t* doc_start) {
  const int lane = threadIdx.x % 32;
  const int64_t r = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;  // (b, g, j)
  if (r >= int64_t(d.batch) * d.kv_heads * d.seq) return;
  const int b = int(r / (int64_t(d.kv_heads) * d.seq)), g = int(r / d.seq % d.kv_heads);
  const int j = int(r % d.seq), n = d.head_dim;
  const int i_end =
      doc_start ? kmath::attn_doc_end(doc_start + int64_t(b) * d.seq, d.seq, j) : d.seq;
  Vec kj, vj, qi, doi, acc_k = {}, acc_v = {};
  load_vec<E>(kj, k + d.kv_at(b, j, g), n, lane);
  load_vec<E>(vj, v + d.kv_at(b, j, g), n, lane);
  for (int h = g * d.group(); h < (g + 1) * d.group(); ++h) {
    const int64_t stats = (int64_t(b) * d.q_heads + h) * d.seq;
    for (int i = j; i < i_end; ++i) {
      load_vec<E>(qi, q + d.q_at(b, i, h), n, lane);
      load_vec<E>(doi, dout + d.q_at(b, i, h), n, lane);
      const float p = expf(score(qi, kj, scale) - lse[stats + i]);
      const float ds = p * (warp_dot(doi, vj) - delta[stats + i]);
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {
        acc_v[c] = fmaf(p, doi[c], acc_v[c]);
        acc_k[c] = fmaf(ds, qi[c], acc_k[c]);
      }
    }
  }
  store_vec<E>(dk + d.kv_at(b, j, g), acc_k, scale, n, lane);
  store_vec<E>(dv + d.kv_at(b, j, g), acc_v, 1.0f, n, lane);
}

unsigned blocks_for(int64_t rows) { return unsigned((rows + kWarps - 1) / kWarps); }

template <class E>
void forward_typed(void* out, float* lse, const void* q, const void* k, const void* v,
                   const Dims& d, float scale, const int32_t* doc_start, cudaStream_t stream) {
  using S = typename E::S;
  ptx::launch(forward_kernel<E>, blocks_for(int64_t(d.batch) * d.q_heads * d.seq), kThreads, 0,
              stream, static_cast<S*>(out), lse, static_cast<const S*>(q), static_cast<const S*>(k),
              static_cast<const S*>(v), d, scale, doc_start);
  CUDA_CHECK_LAUNCH("attention fallback forward_kernel");
}

template <class E>
void backward_typed(void* dq, void* dk, void* dv, const void* q, const void* k, const void* v,
                    const float* lse, const void* dout, const Dims& d, float scale,
                    const int32_t* doc_start, float* delta, cudaStream_t stream) {
  using S = typename E::S;
  const S *qs = static_cast<const S*>(q), *ks = static_cast<const S*>(k),
          *vs = static_cast<const S*>(v), *dos = static_cast<const S*>(dout);
  const unsigned q_blocks = blocks_for(int64_t(d.batch) * d.q_heads * d.seq);
  ptx::launch(delta_kernel<E>, q_blocks, kThreads, 0, stream, delta, qs, ks, vs, lse, dos, d,
              scale, doc_start);
  CUDA_CHECK_LAUNCH("attention fallback delta_kernel");
  ptx::launch(dq_kernel<E>, q_blocks, kThreads, 0, stream, static_cast<S*>(dq), qs, ks, vs, lse,
              delta, dos, d, scale, doc_start);
  CUDA_CHECK_LAUNCH("attention fallback dq_kernel");
  ptx::launch(dkdv_kernel<E>, blocks_for(int64_t(d.batch) * d.kv_heads * d.seq), kThreads, 0,
              stream, static_cast<S*>(dk), static_cast<S*>(dv), qs, ks, vs, lse, delta, dos, d,
              scale, doc_start);
  CUDA_CHECK_LAUNCH("attention fallback dkdv_kernel");
}

}  // namespace

void fallback_forward(void* out, float* lse, const void* q, const void* k, const void* v,
                      ElemType type, const Dims& d, float scale, const int32_t* doc_start,
                      cudaStream_t stream) {
  if (type == ElemType::F32)
    forward_typed<F32Elem>(out, lse, q, k, v, d, scale, doc_start, stream);
  else
    forward_typed<BF16Elem>(out, lse, q, k, v, d, scale, doc_start, stream);
}

void fallback_backward(void* dq, void* dk, void* dv, const void* q, const void* k, const void* v,
                       const float* lse, const void* dout, ElemType type, const Dims& d,
                       float scale, const int32_t* doc_start, float* delta, cudaStream_t stream) {
  if (type == ElemType::F32)
    backward_typed<F32Elem>(dq, dk, dv, q, k, v, lse, dout, d, scale, doc_start, delta, stream);
  else
    backward_typed<BF16Elem>(dq, dk, dv, q, k, v, lse, dout, d, scale, doc_start, delta, stream);
}

}  // namespace kernels::attn
