// Rotary position embedding (rotate-half, Hugging Face layout), forward and inverse.
//
// Math (kernels/math/rope.h, shared with the CPU reference): pair i of a head
// (0 <= i < Dh/2) is (x[i], x[i + Dh/2]); at position p = position_offset + t (packed
// sequences: position_offset + positions[b, t], restarting per document) it
// rotates by angle a = p * inv_freq_i (llama3 scaling folded into inv_freq):
//   y1 = x1 cos a - x2 sin a,   y2 = x2 cos a + x1 sin a
// The inverse (and backward, the Jacobian of a rotation being the rotation) negates
// sin a. All math is fp32; bf16 values are widened on load and rounded once on store.
//
// Layout: x, y [B, T, H, Dh] row-major. One block per token row (b, t): H * Dh
// contiguous elements. The block first computes cos/sin of its position for every i
// into shared memory (Dh/2 sincosf per token, reused by all H heads), then streams
// the row in 16-byte packs (4 f32 / 8 bf16 of x1 and the matching pack of x2) when
// Dh/2 is a multiple of the pack and x, y are 16-byte aligned, element by element
// otherwise.
//
// Agreement with the CPU: inv_freq_i is computed on the host by kmath::rope_inv_freq,
// the CPU's own function, in the caller's C++ code (built with -ffp-contract=off, which
// this file's host pass is not), and passed in, so it is bit-identical. Device powf
// may differ from the host's by ulps, and the position multiplies that error (1e-3 rad
// at p = 4096), so the frequencies are never computed on the device. The angle is then the same single fp32 product on both sides. Only
// sincosf differs: CUDA's is within 2 ulp of the true value, glibc's within 1, so
// cos/sin agree to ~3 ulp of 1 (2e-7 absolute), an error of the size of one fp32
// rounding of the output, inside the parity test's tolerance.
#include "kernels/check.h"
#include "kernels/launch_utils.cuh"
#include "kernels/rope.h"

namespace kernels {

namespace {

using detail::BF16T;
using detail::F32T;
using detail::Vec;

constexpr int kThreads = 256;

struct RopeArgs {
  const void* x;
  void* y;
  int64_t rows, seq, heads, half;
  int64_t position_offset;
  const int32_t* positions;  // [B, T] per-token positions, or nullptr: t
  float sign;  // +1 forward, -1 inverse
  float inv_freq[kRopeMaxHalf];
};

template <class Ty, int V>
__global__ void __launch_bounds__(kThreads) rope_kernel(const __grid_constant__ RopeArgs a) {
  using S = typename Ty::S;
  using P = Vec<S, V>;
  KERNELS_DYNAMIC_SHARED(float, cs);  // cos [half], then sign * sin [half]
  const int64_t packs = a.half / V, row_len = a.heads * 2 * a.half;
  for (int64_t row = blockIdx.x; row < a.rows; row += gridDim.x) {
    const int64_t position = a.position_offset + (a.positions ? a.positions[row] : row % a.seq);
    __syncthreads();  // the previous row's readers are done with cs
    for (int64_t i = threadIdx.x; i < a.half; i += blockDim.x) {
      float s, c;
      sincosf(kmath::rope_angle(position, a.inv_freq[i]), &s, &c);
      cs[i] = c;
      cs[a.half + i] = a.sign * s;
    }
    __syncthreads();
    const S* x = static_cast<const S*>(a.x) + row * row_len;
    S* y = static_cast<S*>(a.y) + row * row_len;
    const int npk = static_cast<int>(packs), work = static_cast<int>(a.heads * packs);
    for (int idx = threadIdx.x; idx < work; idx += blockDim.x) {  // 32-bit: cheap divisions
      const int64_t h = idx / npk, i0 = static_cast<int64_t>(idx % npk) * V;
      const int64_t base = h * 2 * a.half + i0;
      const P x1 = *reinterpret_cast<const P*>(x + base);
      const P x2 = *reinterpret_cast<const P*>(x + base + a.half);
      P y1, y2;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        float o1, o2;
        kmath::rope_rotate_pair(Ty::load(x1.e[v]), Ty::load(x2.e[v]), cs[i0 + v],
                                cs[a.half + i0 + v], &o1, &o2);
        y1.e[v] = Ty::store(o1);
        y2.e[v] = Ty::store(o2);
      }
      *reinterpret_cast<P*>(y + base) = y1;
      *reinterpret_cast<P*>(y + base + a.half) = y2;
    }
  }
}

template <class Ty>
void launch(const RopeArgs& a, bool vec, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(typename Ty::S);
  const int64_t work = a.heads * (vec ? a.half / V : a.half);
  const unsigned threads = detail::round_up_warp(work < kThreads ? work : kThreads);
  const unsigned grid = static_cast<unsigned>(a.rows < 0x7fffffff ? a.rows : 0x7fffffff);
  const size_t smem = static_cast<size_t>(2 * a.half) * sizeof(float);
  if (vec)
    ptx::launch(rope_kernel<Ty, V>, grid, threads, smem, stream, a);
  else
    ptx::launch(rope_kernel<Ty, 1>, grid, threads, smem, stream, a);
  CUDA_CHECK_LAUNCH("rope");
}

}  // namespace

void rope(void* y, const void* x, ElemType type, int64_t batch, int64_t seq, int64_t heads,
          int64_t head_dim, int64_t position_offset, const float* inv_freq, bool inverse,
          cudaStream_t stream, const int32_t* positions) {
  detail::LaunchRange range(inverse ? "rope_backward" : "rope");
  KERNELS_CHECK(type == ElemType::F32 || type == ElemType::BF16, "rope: element type ",
                elem_type_name(type), " is not supported (f32, bf16)");
  KERNELS_CHECK(batch >= 0 && seq >= 0 && heads >= 0, "rope: bad shape [", batch, ", ", seq, ", ",
                heads, ", ", head_dim, "]");
  KERNELS_CHECK(head_dim > 0 && head_dim % 2 == 0 && head_dim / 2 <= kRopeMaxHalf,
                "rope: head dim must be even, positive and at most ", 2 * kRopeMaxHalf, ", got ",
                head_dim);
  KERNELS_CHECK(position_offset >= 0, "rope: position_offset must be >= 0, got ", position_offset);
  const int64_t rows = batch * seq;
  if (rows == 0 || heads == 0) return;
  KERNELS_CHECK(heads * head_dim <= 0x7fffffff, "rope: a token row of ", heads, " x ", head_dim,
                " elements is too long");
  KERNELS_CHECK(x != nullptr && y != nullptr && inv_freq != nullptr, "rope: null pointer");
  RopeArgs a{};
  a.x = x;
  a.y = y;
  a.rows = rows;
  a.seq = seq;
  a.heads = heads;
  a.half = head_dim / 2;
  a.position_offset = position_offset;
  a.positions = positions;
  a.sign = inverse ? -1.0f : 1.0f;
  for (int64_t i = 0; i < a.half; ++i) a.inv_freq[i] = inv_freq[i];
  const size_t elem = type == ElemType::F32 ? 4 : 2;
  const bool vec = (a.half * static_cast<int64_t>(elem)) % 16 == 0 && detail::aligned(x, 16) &&
                   detail::aligned(y, 16);
  if (type == ElemType::F32) launch<F32T>(a, vec, stream);
  else launch<BF16T>(a, vec, stream);
}

}  // namespace kernels
