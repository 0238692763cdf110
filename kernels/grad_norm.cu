// Fused multi-tensor sum of squares (the gradient norm for clipping), deterministic.
//
// Math:  result = sum_t sum_i double(g_t[i])^2, f32 or bf16 elements widened to double.
//
// Layout, as in kernels/adamw.cu: a descriptor table {data, numel, first_chunk, bf16} in
// the device workspace; each tensor is cut into chunks of kChunk elements and chunk c
// belongs to the last tensor whose first_chunk <= c. Pass 1: blocks take chunks in a
// grid-stride loop; a chunk's threads accumulate in double with a fixed stride and the
// block sums them in a fixed tree (detail::block_sum_double) into partial[c]. Pass 2: one
// block adds partial[0 .. chunks) in a fixed order. No atomics, so the result depends on
// the tensor sizes only, not on the grid or the device.
//
// Traffic: 4 (f32) or 2 (bf16) bytes read per element, 8 bytes per chunk written; the
// kernel is memory bound. Double adds cost nothing at that rate on A100 and H100.
#include <vector>

#include "kernels/check.h"
#include "kernels/grad_norm.h"
#include "kernels/launch_utils.cuh"

namespace kernels {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 8192;
constexpr int kBlocksPerSm = 8;

struct Desc {
  const void* data;
  int64_t numel;
  int64_t first_chunk;
  int64_t bf16;
};

__device__ __forceinline__ double square(float v) { return double(v) * double(v); }

__global__ void __launch_bounds__(kThreads)
    chunk_squares_kernel(double* partial, const Desc* __restrict__ descs, int num,
                         int64_t chunks) {
  KERNELS_SHARED(double[kThreads], red);
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const Desc d = descs[detail::chunk_owner(descs, num, c)];
    const int64_t begin = (c - d.first_chunk) * kChunk;
    const int64_t end = begin + kChunk < d.numel ? begin + kChunk : d.numel;
    double sum = 0;
    if (d.bf16) {
      const uint16_t* g = static_cast<const uint16_t*>(d.data);
      for (int64_t i = begin + threadIdx.x; i < end; i += kThreads)
        sum += square(detail::BF16T::load(g[i]));
    } else {
      const float* g = static_cast<const float*>(d.data);
      for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) sum += square(g[i]);
    }
    sum = detail::block_sum_double<kThreads>(sum, red);
    if (threadIdx.x == 0) partial[c] = sum;
  }
}

__global__ void __launch_bounds__(kThreads)
    total_kernel(double* result, const double* __restrict__ partial, int64_t chunks) {
  KERNELS_SHARED(double[kThreads], red);
  double sum = 0;
  for (int64_t c = threadIdx.x; c < chunks; c += kThreads) sum += partial[c];
  sum = detail::block_sum_double<kThreads>(sum, red);
  if (threadIdx.x == 0) *result = sum;
}

size_t align_up(size_t b, size_t a) { return (b + a - 1) / a * a; }

}  // namespace

size_t sum_squares_workspace_bytes(const SquaresTensor* tensors, int num_tensors) {
  int64_t chunks = 0;
  for (int i = 0; i < num_tensors; ++i) chunks += (tensors[i].numel + kChunk - 1) / kChunk;
  return align_up(static_cast<size_t>(num_tensors) * sizeof(Desc), 16) +
         static_cast<size_t>(chunks) * sizeof(double);
}

void sum_squares(const SquaresTensor* tensors, int num_tensors, double* result, void* workspace,
                 size_t workspace_bytes, cudaStream_t stream) {
  detail::LaunchRange range("sum_squares");
  KERNELS_CHECK(num_tensors >= 0 && (num_tensors == 0 || tensors != nullptr),
                "sum_squares: bad tensor list");
  KERNELS_CHECK(result != nullptr, "sum_squares: null result");
  std::vector<Desc> table;
  int64_t chunks = 0;
  for (int i = 0; i < num_tensors; ++i) {
    const SquaresTensor& t = tensors[i];
    KERNELS_CHECK(t.numel >= 0, "sum_squares: tensor ", i, " has negative numel ", t.numel);
    KERNELS_CHECK(t.type == ElemType::F32 || t.type == ElemType::BF16, "sum_squares: tensor ", i,
                  " is ", elem_type_name(t.type), " (f32, bf16)");
    if (t.numel == 0) continue;
    KERNELS_CHECK(t.data != nullptr, "sum_squares: tensor ", i, " has a null pointer");
    table.push_back(Desc{t.data, t.numel, chunks, t.type == ElemType::BF16 ? 1 : 0});
    chunks += (t.numel + kChunk - 1) / kChunk;
  }
  if (table.empty()) {
    CUDA_CHECK(cudaMemsetAsync(result, 0, sizeof(double), stream));
    return;
  }
  const size_t table_bytes = align_up(table.size() * sizeof(Desc), 16);
  const size_t needed = table_bytes + static_cast<size_t>(chunks) * sizeof(double);
  KERNELS_CHECK(workspace != nullptr && workspace_bytes >= needed && detail::aligned(workspace, 16),
                "sum_squares: workspace of ", workspace_bytes, " bytes (16-aligned) needed ",
                needed);
  auto* descs = static_cast<Desc*>(workspace);
  auto* partial = reinterpret_cast<double*>(static_cast<char*>(workspace) + table_bytes);
  // From pageable memory: returns once `table` is staged, so it may go out of scope.
  CUDA_CHECK(cudaMemcpyAsync(descs, table.data(), table.size() * sizeof(Desc),
                             cudaMemcpyHostToDevice, stream));
  int64_t grid = static_cast<int64_t>(detail::sm_count()) * kBlocksPerSm;
  if (grid > chunks) grid = chunks;
  ptx::launch(chunk_squares_kernel, static_cast<unsigned>(grid), kThreads, 0, stream, partial,
              static_cast<const Desc*>(descs), static_cast<int>(table.size()), chunks);
  CUDA_CHECK_LAUNCH("sum_squares (chunks)");
  ptx::launch(total_kernel, 1, kThreads, 0, stream, result, static_cast<const double*>(partial),
              chunks);
  CUDA_CHECK_LAUNCH("sum_squares (total)");
}

}  // namespace kernels
