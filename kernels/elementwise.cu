// Elementwise kernels: arithmetic, activations, dtype conversion, fills, Philox draws.
//
// What they compute (n elements, all operands contiguous, same length):
//   add        out = a + b              mul     out = a * b
//   scale      out = x * factor         accumulate  dst = dst + src
//   silu       y = x * sigmoid(x)       silu'   dx = dy * silu'(x)
//   swiglu     y = silu(g) * u          swiglu' dg = dy * u * silu'(g),  du = dy * silu(g)
//   convert    dst = round_to_nearest_even(src) between f32, bf16, f16
//   fill       dst = value;             philox  dst[i] = f(philox(seed, offset + i))
// The per-element math is kmath's (kernels/math/activations.h, philox.h, bf16.h), the
// same functions the CPU reference calls. Storage is f32 or bf16 (f16 for convert and
// fill); the math is always fp32: load, widen to float, compute, round once on store.
//
// Layout and grid: one generic kernel (map_kernel) per (op, storage type). Each
// thread handles 16-byte packs (4 f32 or 8 bf16) in a grid-stride loop, then the
// scalar tail of fewer than one pack per thread. The packed path needs every pointer
// 16-byte aligned (cudaMalloc gives 256); the launcher falls back to all-scalar
// otherwise, e.g. for a view at an odd element offset. The grid is capped at 16
// blocks of 256 threads per SM (two waves of full occupancy); larger n loops.
//
// Rounding: f32 -> bf16 in the arithmetic kernels uses the hardware cvt.rn.bf16.f32,
// which equals kmath::float_to_bf16_bits for every non-NaN input. convert and the
// Philox fill use kmath::float_to_bf16_bits itself so that they are bitwise equal to
// the CPU (NaN payloads included). The uniform draw a + (b - a) * u is written with
// __fadd_rn/__fmul_rn so nvcc cannot contract it into an FMA that the host does not do.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/check.h"
#include "kernels/elementwise.h"
#include "kernels/launch_utils.cuh"
#include "kernels/math/activations.h"
#include "kernels/math/bf16.h"
#include "kernels/math/philox.h"

namespace kernels {

namespace {

using detail::aligned;
using detail::BF16ExactT;
using detail::BF16T;
using detail::capped_grid;
using detail::F32T;

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 16;

// ---- storage types: how an element is widened to float and rounded back ----------

struct F16T {
  using S = uint16_t;
  __device__ static float load(S v) { return __half2float(__ushort_as_half(v)); }
  __device__ static S store(float f) { return __half_as_ushort(__float2half_rn(f)); }
};

// A pack of V elements moved with one 8- or 16-byte access.
template <int Bytes>
struct RawFor;
template <>
struct RawFor<16> {
  using T = uint4;
};
template <>
struct RawFor<8> {
  using T = uint2;
};
template <class S, int V>
union Pack {
  typename RawFor<sizeof(S) * V>::T raw;
  S e[V];
};

unsigned grid_for(int64_t work) { return capped_grid(work, kThreads, kBlocksPerSm); }

void check_count(const char* name, int64_t n) {
  KERNELS_CHECK(n >= 0, name, ": negative element count ", n);
}

// ---- the generic map kernel -----------------------------------------------------

template <int NIN, int NOUT>
struct MapArgs {
  const void* in[NIN];
  void* out[NOUT];
};

// F: __device__ void operator()(const float (&x)[NIN], float (&y)[NOUT]) const.
template <class Ty, int NIN, int NOUT, class F>
__global__ void __launch_bounds__(kThreads)
    map_kernel(MapArgs<NIN, NOUT> args, F f, int64_t n, int64_t n_packs) {
  using S = typename Ty::S;
  constexpr int V = 16 / sizeof(S);
  using P = Pack<S, V>;
  using Raw = decltype(P::raw);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t c = tid; c < n_packs; c += stride) {
    P in[NIN], out[NOUT];
#pragma unroll
    for (int k = 0; k < NIN; ++k) in[k].raw = static_cast<const Raw*>(args.in[k])[c];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      float x[NIN], y[NOUT];
#pragma unroll
      for (int k = 0; k < NIN; ++k) x[k] = Ty::load(in[k].e[v]);
      f(x, y);
#pragma unroll
      for (int k = 0; k < NOUT; ++k) out[k].e[v] = Ty::store(y[k]);
    }
#pragma unroll
    for (int k = 0; k < NOUT; ++k) static_cast<Raw*>(args.out[k])[c] = out[k].raw;
  }
  for (int64_t i = n_packs * V + tid; i < n; i += stride) {
    float x[NIN], y[NOUT];
#pragma unroll
    for (int k = 0; k < NIN; ++k) x[k] = Ty::load(static_cast<const S*>(args.in[k])[i]);
    f(x, y);
#pragma unroll
    for (int k = 0; k < NOUT; ++k) static_cast<S*>(args.out[k])[i] = Ty::store(y[k]);
  }
}

template <class Ty, int NIN, int NOUT, class F>
void launch_map(const char* name, const MapArgs<NIN, NOUT>& args, F f, int64_t n,
                cudaStream_t stream) {
  constexpr int V = 16 / sizeof(typename Ty::S);
  bool packed = true;
  for (int k = 0; k < NIN; ++k) {
    KERNELS_CHECK(args.in[k] != nullptr, name, ": input ", k, " is null");
    packed = packed && aligned(args.in[k], 16);
  }
  for (int k = 0; k < NOUT; ++k) {
    KERNELS_CHECK(args.out[k] != nullptr, name, ": output ", k, " is null");
    packed = packed && aligned(args.out[k], 16);
  }
  int64_t n_packs = packed ? n / V : 0;
  int64_t tail = n - n_packs * V;
  ptx::launch(map_kernel<Ty, NIN, NOUT, F>, grid_for(n_packs > tail ? n_packs : tail), kThreads, 0,
              stream, args, f, n, n_packs);
  CUDA_CHECK_LAUNCH(name);
}

// Arithmetic ops come in f32 and bf16.
template <int NIN, int NOUT, class F>
void launch_arith(const char* name, ElemType type, const MapArgs<NIN, NOUT>& args, F f, int64_t n,
                  cudaStream_t stream) {
  check_count(name, n);
  if (n == 0) return;
  switch (type) {
    case ElemType::F32: launch_map<F32T>(name, args, f, n, stream); return;
    case ElemType::BF16: launch_map<BF16T>(name, args, f, n, stream); return;
    default: break;
  }
  KERNELS_CHECK(false, name, ": element type ", elem_type_name(type), " is not supported (f32, bf16)");
}

// ---- per-element functions ------------------------------------------------------

struct AddFn {
  __device__ void operator()(const float (&x)[2], float (&y)[1]) const { y[0] = x[0] + x[1]; }
};
struct MulFn {
  __device__ void operator()(const float (&x)[2], float (&y)[1]) const { y[0] = x[0] * x[1]; }
};
struct ScaleFn {
  float factor;
  __device__ void operator()(const float (&x)[1], float (&y)[1]) const { y[0] = x[0] * factor; }
};
struct SiluFn {
  __device__ void operator()(const float (&x)[1], float (&y)[1]) const { y[0] = kmath::silu(x[0]); }
};
struct SiluGradFn {  // x = (dy, x)
  __device__ void operator()(const float (&x)[2], float (&y)[1]) const {
    y[0] = x[0] * kmath::silu_grad(x[1]);
  }
};
struct SwigluFn {  // x = (gate, up)
  __device__ void operator()(const float (&x)[2], float (&y)[1]) const {
    y[0] = kmath::swiglu(x[0], x[1]);
  }
};
struct SwigluGradFn {  // x = (dy, gate, up), y = (dgate, dup)
  __device__ void operator()(const float (&x)[3], float (&y)[2]) const {
    y[0] = x[0] * kmath::swiglu_grad_gate(x[1], x[2]);
    y[1] = x[0] * kmath::swiglu_grad_up(x[1]);
  }
};

// ---- conversion -----------------------------------------------------------------

// Packs of 4 elements: 16 bytes of f32, 8 bytes of a 16-bit type.
template <class SrcT, class DstT>
__global__ void __launch_bounds__(kThreads)
    convert_kernel(typename DstT::S* dst, const typename SrcT::S* src, int64_t n, int64_t n_packs) {
  using SP = Pack<typename SrcT::S, 4>;
  using DP = Pack<typename DstT::S, 4>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t c = tid; c < n_packs; c += stride) {
    SP s;
    DP d;
    s.raw = reinterpret_cast<const decltype(SP::raw)*>(src)[c];
#pragma unroll
    for (int v = 0; v < 4; ++v) d.e[v] = DstT::store(SrcT::load(s.e[v]));
    reinterpret_cast<decltype(DP::raw)*>(dst)[c] = d.raw;
  }
  for (int64_t i = n_packs * 4 + tid; i < n; i += stride) dst[i] = DstT::store(SrcT::load(src[i]));
}

template <class SrcT, class DstT>
void launch_convert(void* dst, const void* src, int64_t n, cudaStream_t stream) {
  bool packed = aligned(src, 4 * sizeof(typename SrcT::S)) && aligned(dst, 4 * sizeof(typename DstT::S));
  int64_t n_packs = packed ? n / 4 : 0;
  int64_t tail = n - n_packs * 4;
  ptx::launch(convert_kernel<SrcT, DstT>, grid_for(n_packs > tail ? n_packs : tail), kThreads, 0,
              stream, static_cast<typename DstT::S*>(dst),
              static_cast<const typename SrcT::S*>(src), n, n_packs);
  CUDA_CHECK_LAUNCH("convert");
}

template <class SrcT>
void convert_from(void* dst, ElemType dst_type, const void* src, int64_t n, cudaStream_t stream) {
  switch (dst_type) {
    case ElemType::F32: launch_convert<SrcT, F32T>(dst, src, n, stream); return;
    case ElemType::BF16: launch_convert<SrcT, BF16ExactT>(dst, src, n, stream); return;
    case ElemType::F16: launch_convert<SrcT, F16T>(dst, src, n, stream); return;
  }
  KERNELS_CHECK(false, "convert: unknown destination type ", static_cast<int>(dst_type));
}

// ---- fills ----------------------------------------------------------------------

// Writes the bit pattern `value` (S = uint16_t or uint32_t) in 16-byte packs.
template <class S>
__global__ void __launch_bounds__(kThreads)
    fill_kernel(S* dst, S value, int64_t n, int64_t n_packs) {
  constexpr int V = 16 / sizeof(S);
  Pack<S, V> p;
#pragma unroll
  for (int v = 0; v < V; ++v) p.e[v] = value;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t c = tid; c < n_packs; c += stride) reinterpret_cast<uint4*>(dst)[c] = p.raw;
  for (int64_t i = n_packs * V + tid; i < n; i += stride) dst[i] = value;
}

template <class S>
void launch_fill_bits(void* dst, S value, int64_t n, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(S);
  int64_t n_packs = aligned(dst, 16) ? n / V : 0;
  int64_t tail = n - n_packs * V;
  ptx::launch(fill_kernel<S>, grid_for(n_packs > tail ? n_packs : tail), kThreads, 0, stream,
              static_cast<S*>(dst), value, n, n_packs);
  CUDA_CHECK_LAUNCH("fill");
}

template <class Ty>
__global__ void __launch_bounds__(kThreads)
    philox_kernel(typename Ty::S* dst, bool normal, float a, float b, uint64_t seed,
                  uint64_t offset, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    uint64_t index = static_cast<uint64_t>(i);
    float v = normal ? __fadd_rn(a, __fmul_rn(b, kmath::philox_normal(seed, offset, index)))
                     : __fadd_rn(a, __fmul_rn(__fsub_rn(b, a),
                                              kmath::philox_uniform(seed, offset, index)));
    dst[i] = Ty::store(v);
  }
}

}  // namespace

const char* elem_type_name(ElemType t) {
  switch (t) {
    case ElemType::F32: return "f32";
    case ElemType::BF16: return "bf16";
    case ElemType::F16: return "f16";
  }
  return "unknown";
}

void add(void* out, const void* a, const void* b, ElemType type, int64_t n, cudaStream_t stream) {
  launch_arith("add", type, MapArgs<2, 1>{{a, b}, {out}}, AddFn{}, n, stream);
}

void mul(void* out, const void* a, const void* b, ElemType type, int64_t n, cudaStream_t stream) {
  launch_arith("mul", type, MapArgs<2, 1>{{a, b}, {out}}, MulFn{}, n, stream);
}

void scale(void* out, const void* x, float factor, ElemType type, int64_t n, cudaStream_t stream) {
  launch_arith("scale", type, MapArgs<1, 1>{{x}, {out}}, ScaleFn{factor}, n, stream);
}

void accumulate(void* dst, const void* src, ElemType type, int64_t n, cudaStream_t stream) {
  launch_arith("accumulate", type, MapArgs<2, 1>{{dst, src}, {dst}}, AddFn{}, n, stream);
}

void silu_forward(void* y, const void* x, ElemType type, int64_t n, cudaStream_t stream) {
  launch_arith("silu_forward", type, MapArgs<1, 1>{{x}, {y}}, SiluFn{}, n, stream);
}

void silu_backward(void* dx, const void* dy, const void* x, ElemType type, int64_t n,
                   cudaStream_t stream) {
  launch_arith("silu_backward", type, MapArgs<2, 1>{{dy, x}, {dx}}, SiluGradFn{}, n, stream);
}

void swiglu_forward(void* y, const void* gate, const void* up, ElemType type, int64_t n,
                    cudaStream_t stream) {
  launch_arith("swiglu_forward", type, MapArgs<2, 1>{{gate, up}, {y}}, SwigluFn{}, n, stream);
}

void swiglu_backward(void* dgate, void* dup, const void* dy, const void* gate, const void* up,
                     ElemType type, int64_t n, cudaStream_t stream) {
  KERNELS_CHECK(dgate != dup || n == 0, "swiglu_backward: dgate and dup are the same buffer");
  launch_arith("swiglu_backward", type, MapArgs<3, 2>{{dy, gate, up}, {dgate, dup}},
               SwigluGradFn{}, n, stream);
}

void convert(void* dst, ElemType dst_type, const void* src, ElemType src_type, int64_t n,
             cudaStream_t stream) {
  check_count("convert", n);
  if (n == 0) return;
  KERNELS_CHECK(dst != nullptr && src != nullptr, "convert: null pointer");
  if (dst_type == src_type) {
    size_t bytes = static_cast<size_t>(n) * (src_type == ElemType::F32 ? 4 : 2);
    if (dst != src) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
    return;
  }
  switch (src_type) {
    case ElemType::F32: convert_from<F32T>(dst, dst_type, src, n, stream); return;
    case ElemType::BF16: convert_from<BF16T>(dst, dst_type, src, n, stream); return;
    case ElemType::F16: convert_from<F16T>(dst, dst_type, src, n, stream); return;
  }
  KERNELS_CHECK(false, "convert: unknown source type ", static_cast<int>(src_type));
}

void fill(void* dst, ElemType type, float value, int64_t n, cudaStream_t stream) {
  check_count("fill", n);
  if (n == 0) return;
  KERNELS_CHECK(dst != nullptr, "fill: null pointer");
  switch (type) {
    case ElemType::F32: launch_fill_bits<uint32_t>(dst, kmath::float_to_bits(value), n, stream); return;
    case ElemType::BF16:
      launch_fill_bits<uint16_t>(dst, kmath::float_to_bf16_bits(value), n, stream);
      return;
    case ElemType::F16:
      launch_fill_bits<uint16_t>(dst, __half_as_ushort(__float2half_rn(value)), n, stream);
      return;
  }
  KERNELS_CHECK(false, "fill: unknown element type ", static_cast<int>(type));
}

void fill_u32(void* dst, uint32_t bits, int64_t n, cudaStream_t stream) {
  check_count("fill_u32", n);
  if (n == 0) return;
  KERNELS_CHECK(dst != nullptr, "fill_u32: null pointer");
  launch_fill_bits<uint32_t>(dst, bits, n, stream);
}

void philox_fill(void* dst, ElemType type, bool normal, float a, float b, uint64_t seed,
                 uint64_t offset, int64_t n, cudaStream_t stream) {
  check_count("philox_fill", n);
  if (n == 0) return;
  KERNELS_CHECK(dst != nullptr, "philox_fill: null pointer");
  unsigned grid = grid_for(n);
  switch (type) {
    case ElemType::F32:
      ptx::launch(philox_kernel<F32T>, grid, kThreads, 0, stream, static_cast<float*>(dst), normal,
                  a, b, seed, offset, n);
      CUDA_CHECK_LAUNCH("philox_fill");
      return;
    case ElemType::BF16:
      ptx::launch(philox_kernel<BF16ExactT>, grid, kThreads, 0, stream, static_cast<uint16_t*>(dst),
                  normal, a, b, seed, offset, n);
      CUDA_CHECK_LAUNCH("philox_fill");
      return;
    default: break;
  }
  KERNELS_CHECK(false, "philox_fill: element type ", elem_type_name(type), " is not supported (f32, bf16)");
}

}  // namespace kernels
