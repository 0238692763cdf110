// 8-bit blockwise AdamW (bitsandbytes' AdamW8bit arithmetic) for many tensors in one launch.
//
// Math, per block of 256 values of one tensor (kernels/math/adamw8bit.h, shared with the
// CPU reference in engine/optim/paged_adamw.cpp):
//   m = smap[qm] * absmax_m,  v = umap[qv] * absmax_v            (dequantize)
//   kmath::adamw_update(p, g, m, v)                                (fp32, no FMA contraction)
//   absmax_m' = max |m|,  absmax_v' = max |v|                      (block reduction, exact)
//   qm' = nearest smap entry to m / absmax_m' (sign kept),  qv' = nearest umap entry
// smap / umap: bnb's signed and unsigned dynamic maps (256 fp32 each).
//
// Layout: one CUDA block of 256 threads per 256-value block, thread t on element t of it;
// the blocks of all tensors are numbered consecutively (first_block per descriptor) and taken
// in a grid-stride loop. The workspace holds both maps (copied to shared memory) and the
// descriptor table. Max is order-independent, so the result is bitwise the CPU's.
//
// Traffic per element: 8 B read (p, g) + 2 B codes + 8 B written (p) + 2 B codes; absmax
// adds 8 B per 256 values. Memory bound.
#include <cstring>
#include <vector>

#include "kernels/adamw8bit.h"
#include "kernels/check.h"
#include "kernels/launch_utils.cuh"
#include "kernels/math/adamw8bit.h"

namespace kernels {

namespace {

constexpr int kThreads = kmath::kAdamW8bitBlock;
constexpr int kBlocksPerSm = 8;
constexpr int kMapBytes = 2 * kmath::kDynamicMapSize * static_cast<int>(sizeof(float));

struct Desc {
  float* param;
  const float* grad;
  uint8_t* qm;
  uint8_t* qv;
  float* absmax_m;
  float* absmax_v;
  int64_t numel;
  int64_t first_chunk;  // index of this tensor's first 256-block (detail::chunk_owner's name)
};
static_assert(sizeof(Desc) == 64, "descriptor layout is shared by host and device");
static_assert(kMapBytes % alignof(Desc) == 0, "descriptors follow the maps in the workspace");

__global__ void __launch_bounds__(kThreads)
    adamw8bit_kernel(const float* __restrict__ maps, const Desc* __restrict__ descs, int num,
                     int64_t blocks, kmath::AdamWStep s) {
  KERNELS_SHARED(float[kmath::kDynamicMapSize], smap);
  KERNELS_SHARED(float[kmath::kDynamicMapSize], umap);
  KERNELS_SHARED(float[kThreads / 32], max_m);
  KERNELS_SHARED(float[kThreads / 32], max_v);
  smap[threadIdx.x] = maps[threadIdx.x];
  umap[threadIdx.x] = maps[kmath::kDynamicMapSize + threadIdx.x];
  __syncthreads();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const Desc d = descs[detail::chunk_owner(descs, num, b)];
    const int64_t block = b - d.first_chunk;
    const int64_t i = block * kThreads + threadIdx.x;
    const bool live = i < d.numel;
    float m = 0.0f, v = 0.0f;
    if (live) {
      const float am = d.absmax_m[block], av = d.absmax_v[block];
      float p = d.param[i];
      m = kmath::blockwise_dequantize(smap[d.qm[i]], am);
      v = kmath::blockwise_dequantize(umap[d.qv[i]], av);
      kmath::adamw_update(p, d.grad[i], m, v, s);
      d.param[i] = p;
    }
    // Block max of |m| and |v|: warp shuffles, then the first warp over the warp maxima.
    float wm = fabsf(m), wv = fabsf(v);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      wm = fmaxf(wm, __shfl_xor_sync(0xffffffffu, wm, off));
      wv = fmaxf(wv, __shfl_xor_sync(0xffffffffu, wv, off));
    }
    __syncthreads();  // the previous block's readers of max_m / max_v are done
    if (lane == 0) {
      max_m[warp] = wm;
      max_v[warp] = wv;
    }
    __syncthreads();
    float am = 0.0f, av = 0.0f;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) {
      am = fmaxf(am, max_m[w]);
      av = fmaxf(av, max_v[w]);
    }
    if (live) {
      d.qm[i] = kmath::blockwise_quantize_signed(m, am, smap);
      d.qv[i] = kmath::blockwise_quantize_unsigned(v, av, umap);
      if (threadIdx.x == 0) {
        d.absmax_m[block] = am;
        d.absmax_v[block] = av;
      }
    }
  }
}

}  // namespace

size_t adamw8bit_workspace_bytes(int num_tensors) {
  return kMapBytes + static_cast<size_t>(num_tensors < 0 ? 0 : num_tensors) * sizeof(Desc);
}

void adamw8bit_step(const AdamW8bitTensor* tensors, int num_tensors, const kmath::AdamWStep& step,
                    void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  detail::LaunchRange range("adamw8bit");
  KERNELS_CHECK(num_tensors >= 0, "adamw8bit: negative tensor count ", num_tensors);
  KERNELS_CHECK(num_tensors == 0 || tensors != nullptr, "adamw8bit: null tensor list");
  // Staging: both maps, then the descriptors, as one host buffer of floats.
  std::vector<float> staging(kMapBytes / sizeof(float));
  for (int k = 0; k < kmath::kDynamicMapSize; ++k) {
    staging[k] = kmath::dynamic_map_value(k);
    staging[kmath::kDynamicMapSize + k] = kmath::unsigned_dynamic_map_value(k);
  }
  std::vector<Desc> table;
  int64_t blocks = 0;
  for (int i = 0; i < num_tensors; ++i) {
    const AdamW8bitTensor& t = tensors[i];
    KERNELS_CHECK(t.numel >= 0, "adamw8bit: tensor ", i, " has negative numel ", t.numel);
    if (t.numel == 0) continue;
    KERNELS_CHECK(t.param && t.grad && t.qm && t.qv && t.absmax_m && t.absmax_v, "adamw8bit: tensor ",
                  i, " has a null pointer");
    table.push_back(Desc{t.param, t.grad, t.qm, t.qv, t.absmax_m, t.absmax_v, t.numel, blocks});
    blocks += (t.numel + kThreads - 1) / kThreads;
  }
  if (table.empty()) return;
  const size_t bytes = adamw8bit_workspace_bytes(static_cast<int>(table.size()));
  KERNELS_CHECK(workspace != nullptr && workspace_bytes >= bytes, "adamw8bit: workspace of ",
                workspace_bytes, " bytes is smaller than the ", bytes, " bytes needed");
  KERNELS_CHECK(detail::aligned(workspace, alignof(Desc)), "adamw8bit: workspace is misaligned");
  KERNELS_CHECK(step.bias2_sqrt > 0.0f, "adamw8bit: bias2_sqrt must be positive, got ",
                step.bias2_sqrt);
  std::vector<unsigned char> host(bytes);
  std::memcpy(host.data(), staging.data(), kMapBytes);
  std::memcpy(host.data() + kMapBytes, table.data(), table.size() * sizeof(Desc));
  // From pageable memory: returns once `host` is staged, so it may go out of scope.
  CUDA_CHECK(cudaMemcpyAsync(workspace, host.data(), bytes, cudaMemcpyHostToDevice, stream));
  int64_t grid = static_cast<int64_t>(detail::sm_count()) * kBlocksPerSm;
  if (grid > blocks) grid = blocks;
  auto* base = static_cast<unsigned char*>(workspace);
  ptx::launch(adamw8bit_kernel, static_cast<unsigned>(grid), kThreads, 0, stream,
              reinterpret_cast<const float*>(base), reinterpret_cast<const Desc*>(base + kMapBytes),
              static_cast<int>(table.size()), blocks, step);
  CUDA_CHECK_LAUNCH("adamw8bit");
}

}  // namespace kernels
