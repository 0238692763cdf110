// NF4 direct few-token matmul: y = x W^T for at most 64 rows of x, reading W straight
// from NF4 (never writing it dense). Launchers in kernels/nf4.h; index math in
// kernels/nf4_layout.h (tested on the CPU lane by lane); shared device helpers in
// kernels/nf4_device.cuh; quantize and dequantize in kernels/nf4.cu.
//
// matmul_mma_kernel     y = x W^T for m <= 64, K % 128 == 0. The cost of M <= 64 is reading
//                       W: 0.5 byte per weight from NF4 against 2 bytes for a bf16 GEMM, so
//                       the kernel reads W once, straight from NF4, and never writes it dense.
//                       CUDA-core FMAs would be compute-bound beyond M ~ 4 (A100: 19.5 TFLOP/s
//                       fp32), so products run on bf16 tensor cores, mma.sync.m16n8k16 with fp32
//                       accumulators. A CTA (4 warps) owns 32 NT rows of W (output columns)
//                       and one k-range (split); each warp owns NT n-tiles of 8 rows. Per chunk
//                       of 128 k: each lane loads 16 bytes of each of its NT W rows (one
//                       16-byte load; the next chunk's are prefetched into registers while the
//                       current one computes), decodes them into B fragments in registers
//                       (table lookup, scale multiply, bf16x2 convert; nf4::b_fragment), and
//                       takes A fragments of x from shared memory (nf4::a_fragment). x [m, 128]
//                       chunks are staged with cp.async into a double buffer shared by the 4
//                       warps, rows m..16*MT-1 kept zero. The mma k slots are mapped onto k so
//                       that a lane's W bytes and x values are contiguous (nf4::mma_k): the W
//                       load is one 16-byte access, the x reads four 16-byte shared loads per
//                       row, conflict-free thanks to the tile's padding (nf4::xs_offset).
//                       Split-K: chunks are divided among grid.y splits (the split count comes
//                       from the shape, nf4::matmul_plan, aiming at ~512 CTAs); with more than
//                       one split each writes fp32 partials and reduce_splits_kernel adds them
//                       in split order, so results are deterministic and device-independent.
// matmul_generic_kernel any K (tiny models, tests): one warp per output column, lanes stride
//                       over k, fp32 FMAs into up to 64 accumulators, a fixed xor-butterfly.
//                       W is rounded to bf16 first, as on the tensor-core path.

#include "kernels/nf4_device.cuh"

namespace kernels {

using namespace nf4_detail;

namespace {

// ---- matmul_small_m: tensor cores -----------------------------------------------------

using ptx::cp_async16;
using ptx::cp_async_commit;
using ptx::cp_async_wait;

// One lane's share of a W chunk: 16 packed bytes per n-tile and what its block scale needs.
template <int NT>
struct WChunk {
  uint4 w[NT];
  uint32_t q[NT];   // dynamic-map code (double-quantized)
  float f[NT];      // nested absmax (double-quantized) or the absmax (plain)
};

template <int MT, int NT>
__global__ void __launch_bounds__(kMatmulThreads)
    matmul_mma_kernel(uint16_t* y, float* partial, const uint16_t* x, const uint8_t* w,
                      Nf4Scales s, int m, int64_t n, int64_t k, int64_t chunks, int splits) {
  constexpr int kRows = MT * kMmaM;
  constexpr int kXsElems = kRows * kXsRowStride;
  KERNELS_SHARED(float[kmath::kNf4Codes], lut);
  KERNELS_SHARED(float[kmath::kDynamicMapSize], map);
  KERNELS_SHARED(uint16_t[2][kXsElems], xs);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const bool dq = s.absmax_q != nullptr;
  load_tables(lut, map, dq);
  // Rows m..kRows-1 of x stay zero (cp.async fills rows < m only); published by the first
  // __syncthreads of the chunk loop.
  for (int i = m * kXsRowStride + tid; i < kXsElems; i += kMatmulThreads) {
    xs[0][i] = 0;
    xs[1][i] = 0;
  }

  const int split = blockIdx.y;
  const int64_t c_begin = nf4::chunk_begin(chunks, splits, split);
  const int64_t c_end = nf4::chunk_begin(chunks, splits, split + 1);
  const int64_t warp_row0 = static_cast<int64_t>(blockIdx.x) * (kMatmulWarps * kMmaN * NT) +
                            static_cast<int64_t>(warp) * kMmaN * NT;
  // This lane's W rows, one per n-tile (B column g), clamped to the last row: columns past n
  // are computed from valid memory and never stored.
  int64_t wrow[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int64_t r = warp_row0 + kMmaN * nt + g;
    wrow[nt] = r < n ? r : n - 1;
  }

  auto load_w = [&](int64_t kc, WChunk<NT>& c) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      c.w[nt] = __ldcs(reinterpret_cast<const uint4*>(w + nf4::lane_w_byte(wrow[nt], kc, t, k)));
      const int64_t b = nf4::lane_w_block(wrow[nt], kc, t, k);
      if (dq) {
        c.q[nt] = __ldg(s.absmax_q + b);
        c.f[nt] = __ldg(s.nested + b / kmath::kNestedBlock);
      } else {
        c.q[nt] = 0;
        c.f[nt] = __ldg(s.absmax + b);
      }
    }
  };
  // x[0..m), k in [kc*128, kc*128 + 128) -> xs[buf]: 16 segments of 16 bytes per row.
  auto stage_x = [&](int64_t kc, int buf) {
    for (int i = tid; i < m * 16; i += kMatmulThreads) {
      const int r = i >> 4, seg = i & 15;
      cp_async16(&xs[buf][nf4::xs_offset(r, 8 * seg)], x + r * k + kc * kChunk + 8 * seg);
    }
    cp_async_commit();
  };

  float acc[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[mt][nt][r] = 0.0f;

  WChunk<NT> cur{}, next{};
  if (c_begin < c_end) {
    stage_x(c_begin, 0);
    load_w(c_begin, cur);
  }
  for (int64_t kc = c_begin; kc < c_end; ++kc) {
    const int buf = static_cast<int>((kc - c_begin) & 1);
    if (kc + 1 < c_end) {
      // The other buffer was last read in the previous iteration, which ended in __syncthreads.
      stage_x(kc + 1, buf ^ 1);
      load_w(kc + 1, next);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    float scale[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      scale[nt] = dq ? kmath::nested_dequantize(map[cur.q[nt]], cur.f[nt], s.offset) : cur.f[nt];
    const uint16_t* xb = xs[buf];
#pragma unroll
    for (int cp = 0; cp < 4; ++cp) {
      // Rows g and g + 8 of each m-tile, k = 32 t + 8 cp .. + 7: covers steps c = 2cp, 2cp+1.
      uint32_t xlo[MT][4], xhi[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint4 lo = *reinterpret_cast<const uint4*>(xb + nf4::xs_offset(mt * kMmaM + g, 32 * t + 8 * cp));
        const uint4 hi = *reinterpret_cast<const uint4*>(xb + nf4::xs_offset(mt * kMmaM + g + 8, 32 * t + 8 * cp));
        xlo[mt][0] = lo.x, xlo[mt][1] = lo.y, xlo[mt][2] = lo.z, xlo[mt][3] = lo.w;
        xhi[mt][0] = hi.x, xhi[mt][1] = hi.y, xhi[mt][2] = hi.z, xhi[mt][3] = hi.w;
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int c = 2 * cp + h;
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) nf4::a_fragment(xlo[mt], xhi[mt], c, a[mt]);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const uint32_t words[4] = {cur.w[nt].x, cur.w[nt].y, cur.w[nt].z, cur.w[nt].w};
          uint32_t b[2];
          nf4::b_fragment(words, c, scale[nt], lut, b);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) ptx::mma_bf16(acc[mt][nt], a[mt], b[0], b[1]);
        }
      }
    }
    __syncthreads();  // xs[buf] is restaged two iterations on
    cur = next;
  }

  // D register r of (mt, nt): row mt*16 + g + 8 (r >> 1), column 8 nt + 2 t + (r & 1).
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = nf4::d_row(mt, g, r);
        const int64_t col = warp_row0 + nf4::d_col(nt, t, r);
        if (row >= m || col >= n) continue;
        if (splits == 1)
          y[row * n + col] = float_to_bf16_rn(acc[mt][nt][r]);
        else
          partial[(static_cast<int64_t>(split) * m + row) * n + col] = acc[mt][nt][r];
      }
}

// y = bf16(partial[0] + partial[1] + ... ), in split order.
__global__ void __launch_bounds__(kReduceThreads)
    reduce_splits_kernel(uint16_t* y, const float* partial, int64_t mn, int splits) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < mn; i += stride) {
    float sum = partial[i];
    for (int sp = 1; sp < splits; ++sp) sum = __fadd_rn(sum, partial[sp * mn + i]);
    y[i] = float_to_bf16_rn(sum);
  }
}

// ---- matmul_small_m: any K ------------------------------------------------------------

template <int MT>
__global__ void __launch_bounds__(kGenericWarps * 32)
    matmul_generic_kernel(uint16_t* y, const uint16_t* x, const uint8_t* w, Nf4Scales s, int m,
                          int64_t n, int64_t k) {
  constexpr int kRows = MT * kMmaM;
  KERNELS_SHARED(float[kmath::kNf4Codes], lut);
  KERNELS_SHARED(float[kmath::kDynamicMapSize], map);
  load_tables(lut, map, s.absmax_q != nullptr);
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kGenericWarps + (threadIdx.x >> 5);
  if (col >= n) return;  // whole warps only: no shuffle below sees a missing lane
  float acc[kRows];
#pragma unroll
  for (int i = 0; i < kRows; ++i) acc[i] = 0.0f;
  for (int64_t kk = lane; kk < k; kk += 32) {
    const int64_t idx = col * k + kk;
    const float wv = bf16_bits_to_float(float_to_bf16_rn(
        nf4::scale_code(lut[kmath::nf4_nibble(w, idx)], block_scale(s, map, idx / kmath::kNf4Block))));
#pragma unroll
    for (int i = 0; i < kRows; ++i)
      if (i < m) acc[i] = fmaf(bf16_bits_to_float(x[i * k + kk]), wv, acc[i]);
  }
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    if (i >= m) break;
    float v = acc[i];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
    if (lane == 0) y[i * n + col] = float_to_bf16_rn(v);
  }
}


template <int MT>
void launch_matmul(const nf4::MatmulPlan& p, uint16_t* y, float* partial, const uint16_t* x,
                   const uint8_t* w, const Nf4Scales& s, int m, int64_t n, int64_t k,
                   cudaStream_t stream) {
  if (!p.tensor_cores) {
    ptx::launch(matmul_generic_kernel<MT>, static_cast<unsigned>(p.n_blocks), kGenericWarps * 32, 0,
                stream, y, x, w, s, m, n, k);
    CUDA_CHECK_LAUNCH("nf4_matmul_small_m (generic)");
    return;
  }
  constexpr int NT = MT <= 2 ? 4 : 2;
  KERNELS_CHECK(p.n_tiles_per_warp == NT, "nf4_matmul_small_m: plan and kernel disagree on NT");
  const dim3 grid(static_cast<unsigned>(p.n_blocks), static_cast<unsigned>(p.splits));
  ptx::launch(matmul_mma_kernel<MT, NT>, grid, kMatmulThreads, 0, stream, y, partial, x, w, s, m, n,
              k, p.chunks, p.splits);
  CUDA_CHECK_LAUNCH("nf4_matmul_small_m (tensor cores)");
  if (p.splits > 1) {
    const int64_t mn = static_cast<int64_t>(m) * n;
    ptx::launch(reduce_splits_kernel, capped_grid(nf4::ceil_div(mn, kReduceThreads)),
                kReduceThreads, 0, stream, y, partial, mn, p.splits);
    CUDA_CHECK_LAUNCH("nf4_matmul_small_m (split reduction)");
  }
}

}  // namespace

size_t nf4_matmul_small_m_workspace_bytes(int64_t m, int64_t n, int64_t k) {
  return nf4::matmul_plan(m, n, k, /*aligned=*/true).workspace_bytes;
}

void nf4_matmul_small_m(void* y, const void* x, const uint8_t* packed, const Nf4Scales& scales,
                        int64_t m, int64_t n, int64_t k, void* workspace, size_t workspace_bytes,
                        cudaStream_t stream) {
  KERNELS_CHECK(m >= 0 && m <= nf4::kMaxSmallM, "nf4_matmul_small_m: m = ", m, " is outside [0, ",
                nf4::kMaxSmallM, "]");
  KERNELS_CHECK(n >= 0 && k >= 0, "nf4_matmul_small_m: negative size n = ", n, ", k = ", k);
  if (m == 0 || n == 0) return;
  KERNELS_CHECK(y != nullptr, "nf4_matmul_small_m: null output");
  if (k == 0) {  // an empty sum
    CUDA_CHECK(cudaMemsetAsync(y, 0, static_cast<size_t>(m * n) * sizeof(uint16_t), stream));
    return;
  }
  KERNELS_CHECK(x != nullptr && packed != nullptr, "nf4_matmul_small_m: null input");
  check_scales("nf4_matmul_small_m", scales);
  const nf4::MatmulPlan p = nf4::matmul_plan(m, n, k, aligned16(x) && aligned16(packed));
  KERNELS_CHECK(p.n_blocks <= 0x7fffffff, "nf4_matmul_small_m: n = ", n, " is too large");
  float* partial = nullptr;
  if (p.tensor_cores && p.splits > 1) {
    KERNELS_CHECK(workspace != nullptr && workspace_bytes >= p.workspace_bytes,
                  "nf4_matmul_small_m: needs a workspace of ", p.workspace_bytes, " bytes, got ",
                  workspace == nullptr ? 0 : workspace_bytes);
    partial = static_cast<float*>(workspace);
  }
  auto* yo = static_cast<uint16_t*>(y);
  const auto* xi = static_cast<const uint16_t*>(x);
  const int mi = static_cast<int>(m);
  switch (p.m_tiles) {
    case 1: launch_matmul<1>(p, yo, partial, xi, packed, scales, mi, n, k, stream); break;
    case 2: launch_matmul<2>(p, yo, partial, xi, packed, scales, mi, n, k, stream); break;
    case 3: launch_matmul<3>(p, yo, partial, xi, packed, scales, mi, n, k, stream); break;
    default: launch_matmul<4>(p, yo, partial, xi, packed, scales, mi, n, k, stream); break;
  }
}

}  // namespace kernels
