// RMSNorm forward and backward over rows of width d (the last dim), fp32 math.
//
//   forward   rstd_r = 1 / sqrt(mean_j(x_rj^2) + eps),  y_rj = w_j * (x_rj * rstd_r)
//   backward  dx_rk = rstd_r * (w_k g_rk - xhat_rk * c_r),  xhat = x rstd,
//             c_r = rstd_r * (sum_j g_rj w_j x_rj) / d
//             dw_j = sum_r g_rj * xhat_rj
// The per-row and per-element steps are kmath's (kernels/math/rmsnorm.h), which the
// CPU reference calls too; the sums run here in fp32.
//
// Layout: x, y, g, dx [rows, d] row-major (f32 or bf16); w, dw [d]; rstd [rows] f32.
//
// Versions, chosen per call from the shape and pointer alignment:
//   vector  d a multiple of the 16-byte pack (4 f32 / 8 bf16), all pointers 16-byte
//           aligned, at most 2048 packs per row (d <= 16384 bf16, 8192 f32): one
//           block of at most 512 threads per row, every thread holds
//           VPT (1, 2 or 4) packs of the row in registers, so a row is read once from
//           memory. Llama's d = 8192 in bf16 is 1024 packs: 256 threads x 4 packs.
//   scalar  anything else (odd widths, views at odd offsets): element loops that read
//           the row a second time (from L1/L2) instead of holding it.
//
// Determinism: every sum has a fixed order given the shape. The row sums are block
// trees (launch_utils.cuh, block_sum). dw uses no atomics: the backward kernel gives
// each block a tile of kRowsPerTile consecutive rows, accumulates each column over its
// tile in row order into registers, and writes one fp32 partial row per tile to the
// workspace [tiles, d]; a second kernel sums the tiles of each column in tile order.
// The tile size is a constant, so results do not depend on the GPU's SM count.
#include <initializer_list>

#include "kernels/check.h"
#include "kernels/launch_utils.cuh"
#include "kernels/math/rmsnorm.h"
#include "kernels/rmsnorm.h"

namespace kernels {

namespace {

using detail::BF16T;
using detail::block_sum;
using detail::F32T;
using detail::Vec;

constexpr int64_t kRowsPerTile = 16;   // rows per block when dw is wanted
constexpr int kMaxThreads = 512;        // launch bound: <= 128 registers per thread
constexpr int64_t kMaxVectorPacks = 4 * kMaxThreads;
constexpr int kScalarThreads = 256;
constexpr int kFinalThreads = 256;
constexpr size_t kMaxSmem = 48 * 1024;  // dynamic shared memory without an opt-in

struct FwdArgs {
  const void* x;
  const void* w;
  void* y;
  float* rstd;
  int64_t rows, d;
  float eps;
};

struct BwdArgs {
  const void* x;
  const void* w;
  const void* g;
  const float* rstd;
  void* dx;         // null: no dx
  float* partial;   // null: no dw; else [tiles, d]
  int64_t rows, d, rows_per_block;
};

// One block per row (grid-stride over rows). V: elements per pack (1 = scalar path);
// VPT: packs held per thread (0 = scalar path, loops and re-reads).
template <class Ty, int V, int VPT>
__global__ void __launch_bounds__(kMaxThreads) rmsnorm_forward_kernel(FwdArgs a) {
  using S = typename Ty::S;
  using P = Vec<S, V>;
  KERNELS_SHARED(float[33], red);
  const int64_t np = a.d / V;
  const P* w = static_cast<const P*>(a.w);
  for (int64_t row = blockIdx.x; row < a.rows; row += gridDim.x) {
    const P* x = static_cast<const P*>(a.x) + row * np;
    P* y = static_cast<P*>(a.y) + row * np;
    float ss = 0.0f;
    if constexpr (VPT > 0) {
      P xc[VPT] = {};
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const int64_t p = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
        if (p < np) xc[k] = x[p];
#pragma unroll
        for (int v = 0; v < V; ++v) {
          const float f = Ty::load(xc[k].e[v]);  // zero-filled beyond the row
          ss += f * f;
        }
      }
      const float r = kmath::rmsnorm_rstd(block_sum(ss, red), a.d, a.eps);
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const int64_t p = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
        if (p >= np) continue;
        const P wp = w[p];
        P out;
#pragma unroll
        for (int v = 0; v < V; ++v)
          out.e[v] = Ty::store(kmath::rmsnorm_apply(Ty::load(xc[k].e[v]), Ty::load(wp.e[v]), r));
        y[p] = out;
      }
      if (threadIdx.x == 0) a.rstd[row] = r;
    } else {
      for (int64_t p = threadIdx.x; p < np; p += blockDim.x) {
        const float f = Ty::load(x[p].e[0]);
        ss += f * f;
      }
      const float r = kmath::rmsnorm_rstd(block_sum(ss, red), a.d, a.eps);
      for (int64_t p = threadIdx.x; p < np; p += blockDim.x) {
        P out;
        out.e[0] = Ty::store(kmath::rmsnorm_apply(Ty::load(x[p].e[0]), Ty::load(w[p].e[0]), r));
        y[p] = out;
      }
      if (threadIdx.x == 0) a.rstd[row] = r;
    }
  }
}

// One block per tile of rows_per_block consecutive rows; see the file comment.
template <class Ty, int V, int VPT>
__global__ void __launch_bounds__(kMaxThreads) rmsnorm_backward_kernel(BwdArgs a) {
  using S = typename Ty::S;
  using P = Vec<S, V>;
  KERNELS_SHARED(float[33], red);
  const int64_t np = a.d / V;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * a.rows_per_block;
  const int64_t row1 = row0 + a.rows_per_block < a.rows ? row0 + a.rows_per_block : a.rows;
  const bool want_dx = a.dx != nullptr, want_dw = a.partial != nullptr;
  const P* w = static_cast<const P*>(a.w);
  if constexpr (VPT > 0) {
    // dw accumulators in shared memory, [k][v][thread] so that a warp's accesses hit
    // 32 different banks; each thread only touches its own, so no barrier is needed.
    KERNELS_DYNAMIC_SHARED(float, acc);
    const auto acc_at = [&](int k, int v) -> float& {
      return acc[(k * V + v) * static_cast<int64_t>(blockDim.x) + threadIdx.x];
    };
    P wc[VPT] = {};
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int64_t p = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
      if (p < np) wc[k] = w[p];
      if (want_dw)
#pragma unroll
        for (int v = 0; v < V; ++v) acc_at(k, v) = 0.0f;
    }
    for (int64_t row = row0; row < row1; ++row) {
      const P* x = static_cast<const P*>(a.x) + row * np;
      const P* g = static_cast<const P*>(a.g) + row * np;
      P xc[VPT] = {}, gc[VPT] = {};
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const int64_t p = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
        if (p < np) {
          xc[k] = x[p];
          gc[k] = g[p];
        }
      }
      const float r = a.rstd[row];
      if (want_dx) {
        float dot = 0.0f;
#pragma unroll
        for (int k = 0; k < VPT; ++k)
#pragma unroll
          for (int v = 0; v < V; ++v)
            dot += Ty::load(gc[k].e[v]) * Ty::load(wc[k].e[v]) * Ty::load(xc[k].e[v]);
        const float c = kmath::rmsnorm_dx_coef(block_sum(dot, red), r, a.d);
        P* dx = static_cast<P*>(a.dx) + row * np;
#pragma unroll
        for (int k = 0; k < VPT; ++k) {
          const int64_t p = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
          if (p >= np) continue;
          P out;
#pragma unroll
          for (int v = 0; v < V; ++v)
            out.e[v] = Ty::store(kmath::rmsnorm_dx(Ty::load(xc[k].e[v]), Ty::load(wc[k].e[v]),
                                                   Ty::load(gc[k].e[v]), r, c));
          dx[p] = out;
        }
      }
      if (want_dw) {
#pragma unroll
        for (int k = 0; k < VPT; ++k)
#pragma unroll
          for (int v = 0; v < V; ++v)
            acc_at(k, v) += kmath::rmsnorm_dw_term(Ty::load(xc[k].e[v]), Ty::load(gc[k].e[v]), r);
      }
    }
    if (want_dw) {
      Vec<float, V>* part = reinterpret_cast<Vec<float, V>*>(a.partial + blockIdx.x * a.d);
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const int64_t p = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
        if (p >= np) continue;
        Vec<float, V> out;
#pragma unroll
        for (int v = 0; v < V; ++v) out.e[v] = acc_at(k, v);
        part[p] = out;
      }
    }
  } else {
    float* part = want_dw ? a.partial + blockIdx.x * a.d : nullptr;
    for (int64_t row = row0; row < row1; ++row) {
      const P* x = static_cast<const P*>(a.x) + row * np;
      const P* g = static_cast<const P*>(a.g) + row * np;
      const float r = a.rstd[row];
      if (want_dx) {
        float dot = 0.0f;
        for (int64_t p = threadIdx.x; p < np; p += blockDim.x)
          dot += Ty::load(g[p].e[0]) * Ty::load(w[p].e[0]) * Ty::load(x[p].e[0]);
        const float c = kmath::rmsnorm_dx_coef(block_sum(dot, red), r, a.d);
        P* dx = static_cast<P*>(a.dx) + row * np;
        for (int64_t p = threadIdx.x; p < np; p += blockDim.x) {
          P out;
          out.e[0] = Ty::store(kmath::rmsnorm_dx(Ty::load(x[p].e[0]), Ty::load(w[p].e[0]),
                                                 Ty::load(g[p].e[0]), r, c));
          dx[p] = out;
        }
      }
      if (want_dw)  // each thread owns its columns: accumulate in place, row order
        for (int64_t p = threadIdx.x; p < np; p += blockDim.x) {
          const float term = kmath::rmsnorm_dw_term(Ty::load(x[p].e[0]), Ty::load(g[p].e[0]), r);
          part[p] = (row == row0 ? 0.0f : part[p]) + term;
        }
    }
  }
}

// dw_j = sum over tiles t = 0, 1, ... of partial[t, j], in that order.
template <class Ty>
__global__ void rmsnorm_dw_final_kernel(const float* partial, typename Ty::S* dw, int64_t tiles,
                                        int64_t d) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= d) return;
  float s = 0.0f;
  for (int64_t t = 0; t < tiles; ++t) s += partial[t * d + j];
  dw[j] = Ty::store(s);
}

// The launch shape for rows of width d: vector (vpt 1/2/4) or scalar (vpt 0).
struct Plan {
  int vpt;
  unsigned threads;
  size_t smem_bytes;
};

// ptrs: the row tensors (16-byte packs); partial: the dw workspace (packs of V floats,
// so 32-byte alignment for bf16), or null when no dw is computed. With dw the vector
// path keeps its accumulators in shared memory (smem_bytes), at most kMaxSmem.
Plan plan_for(int64_t d, size_t elem_bytes, std::initializer_list<const void*> ptrs,
              const float* partial = nullptr) {
  const int64_t per_pack = 16 / static_cast<int64_t>(elem_bytes);
  bool vec = d % per_pack == 0;
  for (const void* p : ptrs) vec = vec && (p == nullptr || detail::aligned(p, 16));
  if (partial) vec = vec && detail::aligned(partial, static_cast<uintptr_t>(4 * per_pack));
  const int64_t np = d / per_pack;
  if (vec && np <= kMaxVectorPacks) {
    const int vpt = np <= 256 ? 1 : np <= 512 ? 2 : 4;
    const unsigned threads = detail::round_up_warp((np + vpt - 1) / vpt);
    const size_t smem = partial ? sizeof(float) * static_cast<size_t>(vpt * per_pack) * threads : 0;
    if (smem <= kMaxSmem) return {vpt, threads, smem};
  }
  return {0, detail::round_up_warp(d < kScalarThreads ? d : kScalarThreads), 0};
}

unsigned grid_rows(int64_t blocks) {
  return static_cast<unsigned>(blocks < 0x7fffffff ? blocks : 0x7fffffff);
}

size_t elem_bytes(ElemType type) { return type == ElemType::F32 ? 4 : 2; }

void check_common(const char* name, ElemType type, int64_t rows, int64_t d) {
  KERNELS_CHECK(type == ElemType::F32 || type == ElemType::BF16, name, ": element type ",
                elem_type_name(type), " is not supported (f32, bf16)");
  KERNELS_CHECK(rows >= 0 && d > 0, name, ": bad shape rows ", rows, ", d ", d);
}

template <class Ty>
void launch_forward(const Plan& plan, const FwdArgs& a, cudaStream_t s) {
  constexpr int V = 16 / sizeof(typename Ty::S);
  const unsigned grid = grid_rows(a.rows);
  switch (plan.vpt) {
    case 1:
      ptx::launch(rmsnorm_forward_kernel<Ty, V, 1>, grid, plan.threads, 0, s, a);
      break;
    case 2:
      ptx::launch(rmsnorm_forward_kernel<Ty, V, 2>, grid, plan.threads, 0, s, a);
      break;
    case 4:
      ptx::launch(rmsnorm_forward_kernel<Ty, V, 4>, grid, plan.threads, 0, s, a);
      break;
    default:
      ptx::launch(rmsnorm_forward_kernel<Ty, 1, 0>, grid, plan.threads, 0, s, a);
      break;
  }
  CUDA_CHECK_LAUNCH("rmsnorm_forward");
}

template <class Ty>
void launch_backward(const Plan& plan, const BwdArgs& a, void* dw, cudaStream_t s) {
  constexpr int V = 16 / sizeof(typename Ty::S);
  const int64_t tiles = (a.rows + a.rows_per_block - 1) / a.rows_per_block;
  KERNELS_CHECK(tiles <= 0x7fffffff, "rmsnorm_backward: too many rows (", a.rows, ")");
  const unsigned grid = static_cast<unsigned>(tiles);
  const size_t smem = plan.smem_bytes;
  switch (plan.vpt) {
    case 1:
      ptx::launch(rmsnorm_backward_kernel<Ty, V, 1>, grid, plan.threads, smem, s, a);
      break;
    case 2:
      ptx::launch(rmsnorm_backward_kernel<Ty, V, 2>, grid, plan.threads, smem, s, a);
      break;
    case 4:
      ptx::launch(rmsnorm_backward_kernel<Ty, V, 4>, grid, plan.threads, smem, s, a);
      break;
    default:
      ptx::launch(rmsnorm_backward_kernel<Ty, 1, 0>, grid, plan.threads, 0, s, a);
      break;
  }
  CUDA_CHECK_LAUNCH("rmsnorm_backward");
  if (dw == nullptr) return;
  const unsigned final_grid = static_cast<unsigned>((a.d + kFinalThreads - 1) / kFinalThreads);
  ptx::launch(rmsnorm_dw_final_kernel<Ty>, final_grid, kFinalThreads, 0, s, a.partial,
              static_cast<typename Ty::S*>(dw), tiles, a.d);
  CUDA_CHECK_LAUNCH("rmsnorm_backward (dw)");
}

}  // namespace

void rmsnorm_forward(void* y, float* rstd, const void* x, const void* w, ElemType type,
                     int64_t rows, int64_t d, float eps, cudaStream_t stream) {
  detail::LaunchRange range("rms_norm");
  check_common("rmsnorm_forward", type, rows, d);
  KERNELS_CHECK(eps >= 0.0f, "rmsnorm_forward: eps must be >= 0, got ", eps);
  if (rows == 0) return;
  KERNELS_CHECK(y && rstd && x && w, "rmsnorm_forward: null pointer");
  const Plan plan = plan_for(d, elem_bytes(type), {y, x, w});
  const FwdArgs a{x, w, y, rstd, rows, d, eps};
  if (type == ElemType::F32) launch_forward<F32T>(plan, a, stream);
  else launch_forward<BF16T>(plan, a, stream);
}

int64_t rmsnorm_backward_workspace_floats(int64_t rows, int64_t d) {
  return (rows + kRowsPerTile - 1) / kRowsPerTile * d;
}

void rmsnorm_backward(void* dx, void* dw, float* workspace, const void* dy, const void* x,
                      const void* w, const float* rstd, ElemType type, int64_t rows, int64_t d,
                      cudaStream_t stream) {
  detail::LaunchRange range("rms_norm_backward");
  check_common("rmsnorm_backward", type, rows, d);
  KERNELS_CHECK(dx != nullptr || dw != nullptr, "rmsnorm_backward: neither dx nor dw requested");
  if (rows == 0) {  // an empty batch: dw = 0
    if (dw) CUDA_CHECK(cudaMemsetAsync(dw, 0, static_cast<size_t>(d) * elem_bytes(type), stream));
    return;
  }
  KERNELS_CHECK(dy && x && w && rstd, "rmsnorm_backward: null input pointer");
  KERNELS_CHECK(dw == nullptr || workspace != nullptr, "rmsnorm_backward: dw needs a workspace");
  const Plan plan = plan_for(d, elem_bytes(type), {dx, dy, x, w}, dw ? workspace : nullptr);
  const BwdArgs a{x, w, dy, rstd, dx, dw ? workspace : nullptr, rows, d,
                  dw ? kRowsPerTile : 1};
  if (type == ElemType::F32) launch_backward<F32T>(plan, a, dw, stream);
  else launch_backward<BF16T>(plan, a, dw, stream);
}

}  // namespace kernels
