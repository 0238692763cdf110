// Fused multi-tensor AdamW for the fp32 LoRA masters: one launch for every tensor.
//
// Math: per element, kmath::adamw_update (kernels/math/adamw.h), the function the CPU
// optimizer calls too, written with explicit round-to-nearest intrinsics so that no
// FMA contraction happens: the result is bitwise equal to engine/optim/adamw.cpp.
//   p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g g
//   p <- p - step_size m / (sqrt(v) / bias2_sqrt + eps)
//
// Layout: the launcher copies a table of descriptors {param, grad, m, v, numel,
// first_chunk, vec4} to the device workspace. Each tensor is cut into chunks of
// kChunk elements; chunk c of the whole list belongs to the last tensor whose
// first_chunk <= c (a binary search over the table, which stays in L1). Blocks take
// chunks in a grid-stride loop, so one launch covers a thousand tensors of any sizes
// with balanced blocks. Tensors whose four pointers are 16-byte aligned move float4s
// (cudaMalloc gives 256-byte alignment), others go element by element.
//
// Traffic: 16 bytes read (p, g, m, v) and 12 written (p, m, v) per element; the
// kernel is purely memory bound.
#include <vector>

#include "kernels/adamw.h"
#include "kernels/check.h"
#include "kernels/launch_utils.cuh"

namespace kernels {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 8192;  // elements per block-task: 8 float4 per thread
constexpr int kBlocksPerSm = 8;

struct Desc {
  float* param;
  const float* grad;
  float* m;
  float* v;
  int64_t numel;
  int64_t first_chunk;
  int64_t vec4;  // all four pointers 16-byte aligned
};
static_assert(sizeof(Desc) == 56, "descriptor layout is shared by host and device");

__device__ __forceinline__ void update4(float4& p, float4 g, float4& m, float4& v,
                                        const kmath::AdamWStep& s) {
  kmath::adamw_update(p.x, g.x, m.x, v.x, s);
  kmath::adamw_update(p.y, g.y, m.y, v.y, s);
  kmath::adamw_update(p.z, g.z, m.z, v.z, s);
  kmath::adamw_update(p.w, g.w, m.w, v.w, s);
}

__global__ void __launch_bounds__(kThreads)
    adamw_kernel(const Desc* __restrict__ descs, int num, int64_t chunks, kmath::AdamWStep s) {
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const Desc d = descs[detail::chunk_owner(descs, num, c)];
    const int64_t begin = (c - d.first_chunk) * kChunk;
    const int64_t end = begin + kChunk < d.numel ? begin + kChunk : d.numel;
    int64_t scalar_begin = begin;
    if (d.vec4) {
      const int64_t vend = begin + (end - begin) / 4 * 4;
      float4* p4 = reinterpret_cast<float4*>(d.param);
      const float4* g4 = reinterpret_cast<const float4*>(d.grad);
      float4* m4 = reinterpret_cast<float4*>(d.m);
      float4* v4 = reinterpret_cast<float4*>(d.v);
#pragma unroll 4
      for (int64_t i = begin / 4 + threadIdx.x; i < vend / 4; i += kThreads) {
        float4 p = p4[i], m = m4[i], v = v4[i];
        update4(p, g4[i], m, v, s);
        p4[i] = p;
        m4[i] = m;
        v4[i] = v;
      }
      scalar_begin = vend;
    }
    for (int64_t i = scalar_begin + threadIdx.x; i < end; i += kThreads) {
      float p = d.param[i], m = d.m[i], v = d.v[i];
      kmath::adamw_update(p, d.grad[i], m, v, s);
      d.param[i] = p;
      d.m[i] = m;
      d.v[i] = v;
    }
  }
}

}  // namespace

size_t adamw_workspace_bytes(int num_tensors) {
  return static_cast<size_t>(num_tensors < 0 ? 0 : num_tensors) * sizeof(Desc);
}

void adamw_step(const AdamWTensor* tensors, int num_tensors, const kmath::AdamWStep& step,
                void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  detail::LaunchRange range("adamw");
  KERNELS_CHECK(num_tensors >= 0, "adamw: negative tensor count ", num_tensors);
  KERNELS_CHECK(num_tensors == 0 || tensors != nullptr, "adamw: null tensor list");
  std::vector<Desc> table;
  table.reserve(static_cast<size_t>(num_tensors));
  int64_t chunks = 0;
  for (int i = 0; i < num_tensors; ++i) {
    const AdamWTensor& t = tensors[i];
    KERNELS_CHECK(t.numel >= 0, "adamw: tensor ", i, " has negative numel ", t.numel);
    if (t.numel == 0) continue;
    KERNELS_CHECK(t.param && t.grad && t.m && t.v, "adamw: tensor ", i, " has a null pointer");
    KERNELS_CHECK(static_cast<const void*>(t.grad) != t.param && t.m != t.param && t.v != t.param &&
                      t.m != t.v,
                  "adamw: tensor ", i, " has aliased param/grad/m/v buffers");
    const bool vec4 = detail::aligned(t.param, 16) && detail::aligned(t.grad, 16) &&
                      detail::aligned(t.m, 16) && detail::aligned(t.v, 16);
    table.push_back(Desc{t.param, t.grad, t.m, t.v, t.numel, chunks, vec4 ? 1 : 0});
    chunks += (t.numel + kChunk - 1) / kChunk;
  }
  if (table.empty()) return;
  const size_t bytes = table.size() * sizeof(Desc);
  KERNELS_CHECK(workspace != nullptr && workspace_bytes >= bytes, "adamw: workspace of ",
                workspace_bytes, " bytes is smaller than the ", bytes, " bytes needed");
  KERNELS_CHECK(detail::aligned(workspace, alignof(Desc)), "adamw: workspace is misaligned");
  KERNELS_CHECK(step.bias2_sqrt > 0.0f, "adamw: bias2_sqrt must be positive, got ",
                step.bias2_sqrt);
  // From pageable memory: returns once `table` is staged, so it may go out of scope.
  CUDA_CHECK(cudaMemcpyAsync(workspace, table.data(), bytes, cudaMemcpyHostToDevice, stream));
  int64_t grid = static_cast<int64_t>(detail::sm_count()) * kBlocksPerSm;
  if (grid > chunks) grid = chunks;
  ptx::launch(adamw_kernel, static_cast<unsigned>(grid), kThreads, 0, stream,
              static_cast<const Desc*>(workspace), static_cast<int>(table.size()), chunks, step);
  CUDA_CHECK_LAUNCH("adamw");
}

}  // namespace kernels
