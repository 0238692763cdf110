// Embedding lookup and its deterministic backward.
//
// Math: ids i32 [n], table [V, d] -> out [n, d], out[i] = table[ids[i]].
//   Backward (only the table has a gradient): dtable[r] = sum over i with ids[i] == r
//   of dout[i], summed in fp32 in increasing i, then rounded once to the table's type.
//   That is the CPU reference's order (engine/cpu/embedding_loss.cpp), so f32 results
//   are bitwise equal to it, and every run gives the same bits (no float atomics).
//
// Forward: one block per id row, copying the row in 16-byte units when the row size
// and pointers allow (4-byte or 2-byte units otherwise). An id outside [0, V) is not
// gathered; the block records (i << 32 | id) with an integer atomicMin into a status
// word, so the host learns the first bad position and its id after the launch.
//
// Backward, for Llama's 128k vocabulary where one block per vocabulary row scanning all
// ids would be far too slow:
//   1. dtable = 0 (cudaMemsetAsync; most rows receive no gradient).
//   2. A stable radix sort (CUB) of the pairs (id, position i), keys limited to the
//      bits vocab needs: equal ids become contiguous segments, positions ascending
//      within each segment (stability, and positions enter in order).
//   3. One warp per (sorted position, feature tile of 32 packs): a warp whose position
//      starts a segment walks the segment in order, summing its lane's pack of every
//      dout row in fp32 registers, and writes dtable[id] for its tile once. The other
//      warps exit at once. Each dtable element is written by exactly one lane.
// Work is O(n log V + n d); memory is one pass over dout plus the dtable clear.
#if defined(KERNELS_SIMT)
#include <algorithm>
#include <numeric>
#include <vector>
#else
#include <cub/device/device_radix_sort.cuh>
#endif

#include "kernels/check.h"
#include "kernels/embedding.h"
#include "kernels/launch_utils.cuh"

namespace kernels {

namespace {

using detail::BF16T;
using detail::F32T;
using detail::Vec;

constexpr int kGatherThreads = 256;
constexpr int kWarpsPerBlock = 8;

template <class W>
__global__ void __launch_bounds__(kGatherThreads)
    gather_kernel(W* __restrict__ out, const int32_t* __restrict__ ids,
                  const W* __restrict__ table, int64_t n, int64_t vocab, int64_t row_units,
                  unsigned long long* status) {
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const int32_t id = ids[row];
    if (id < 0 || id >= vocab) {
      if (threadIdx.x == 0)
        atomicMin(status, (static_cast<unsigned long long>(row) << 32) | static_cast<uint32_t>(id));
      continue;
    }
    const W* src = table + id * row_units;
    W* dst = out + row * row_units;
#pragma unroll 4
    for (int64_t u = threadIdx.x; u < row_units; u += blockDim.x) dst[u] = src[u];
  }
}

__global__ void iota_kernel(int32_t* v, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    v[i] = static_cast<int32_t>(i);
}

// Segment sums; see the file comment. V: elements per lane pack (1 = scalar).
template <class Ty, int V>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    segment_sum_kernel(typename Ty::S* __restrict__ dtable, const typename Ty::S* __restrict__ dout,
                       const uint32_t* __restrict__ keys, const int32_t* __restrict__ positions,
                       int64_t n, int64_t vocab, int64_t d) {
  using P = Vec<typename Ty::S, V>;
  const int64_t s = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (s >= n) return;
  const uint32_t key = keys[s];
  if ((s > 0 && keys[s - 1] == key) || key >= vocab) return;  // not a segment head
  const int64_t col = (static_cast<int64_t>(blockIdx.y) * 32 + threadIdx.x % 32) * V;
  if (col >= d) return;
  float acc[V] = {};
  for (int64_t j = s; j < n && keys[j] == key; ++j) {
    const P g = *reinterpret_cast<const P*>(dout + positions[j] * d + col);
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] += Ty::load(g.e[v]);
  }
  P out;
#pragma unroll
  for (int v = 0; v < V; ++v) out.e[v] = Ty::store(acc[v]);
  *reinterpret_cast<P*>(dtable + static_cast<int64_t>(key) * d + col) = out;
}

size_t elem_bytes(ElemType type) { return type == ElemType::F32 ? 4 : 2; }

void check_type(const char* name, ElemType type) {
  KERNELS_CHECK(type == ElemType::F32 || type == ElemType::BF16, name, ": element type ",
                elem_type_name(type), " is not supported (f32, bf16)");
}

int key_bits(int64_t vocab) {
  int bits = 1;
  while ((int64_t(1) << bits) < vocab) ++bits;
  return bits;
}

// Stable sort of (key, value) pairs by the low `bits` of the keys. temp == nullptr asks
// for the temporary storage size. CUB's radix sort on a GPU; the SIMT emulator runs our
// kernels, not CUB's, so there std::stable_sort gives the same (unique) stable order.
cudaError_t sort_pairs(void* temp, size_t& temp_bytes, const uint32_t* keys_in,
                       uint32_t* keys_out, const int32_t* values_in, int32_t* values_out, int n,
                       int bits, cudaStream_t stream) {
#if defined(KERNELS_SIMT)
  (void)stream;
  if (temp == nullptr) {
    temp_bytes = 0;
    return cudaSuccess;
  }
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return keys_in[a] < keys_in[b]; });
  for (int i = 0; i < n; ++i) {
    keys_out[i] = keys_in[order[i]];
    values_out[i] = values_in[order[i]];
  }
  (void)bits;  // keys are below 2^bits
  return cudaSuccess;
#else
  return cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, values_in,
                                         values_out, n, 0, bits, stream);
#endif
}

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

// The workspace: sorted keys, positions in, positions out, then CUB's temporary storage.
struct Workspace {
  size_t keys_out = 0, pos_in = 0, pos_out = 0, temp = 0, temp_bytes = 0, total = 0;
};

Workspace layout(int64_t n, int64_t vocab) {
  Workspace w;
  size_t temp_bytes = 0;
  CUDA_CHECK(sort_pairs(nullptr, temp_bytes, nullptr, nullptr, nullptr, nullptr,
                        static_cast<int>(n), key_bits(vocab), nullptr));
  const size_t a = align256(static_cast<size_t>(n) * 4);
  w.pos_in = a;
  w.pos_out = 2 * a;
  w.temp = 3 * a;
  w.temp_bytes = temp_bytes;
  w.total = 3 * a + align256(temp_bytes);
  return w;
}

template <class Ty, int V>
void launch_segments(void* dtable, const void* dout, const uint32_t* keys, const int32_t* pos,
                     int64_t n, int64_t vocab, int64_t d, cudaStream_t stream) {
  const int64_t tiles = (d + 32 * V - 1) / (32 * V);
  KERNELS_CHECK(tiles <= 65535, "embedding_backward: width ", d, " is too large");
  const dim3 grid(static_cast<unsigned>((n + kWarpsPerBlock - 1) / kWarpsPerBlock),
                  static_cast<unsigned>(tiles));
  ptx::launch(segment_sum_kernel<Ty, V>, grid, kWarpsPerBlock * 32, 0, stream,
              static_cast<typename Ty::S*>(dtable), static_cast<const typename Ty::S*>(dout), keys,
              pos, n, vocab, d);
  CUDA_CHECK_LAUNCH("embedding_backward");
}

template <class Ty>
void segments_for(bool vec, void* dtable, const void* dout, const uint32_t* keys,
                  const int32_t* pos, int64_t n, int64_t vocab, int64_t d, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(typename Ty::S);
  if (vec) launch_segments<Ty, V>(dtable, dout, keys, pos, n, vocab, d, stream);
  else launch_segments<Ty, 1>(dtable, dout, keys, pos, n, vocab, d, stream);
}

}  // namespace

void embedding_forward(void* out, const int32_t* ids, const void* table, ElemType type, int64_t n,
                       int64_t vocab, int64_t d, uint64_t* status, cudaStream_t stream) {
  detail::LaunchRange range("embedding");
  check_type("embedding_forward", type);
  KERNELS_CHECK(n >= 0 && n < (int64_t(1) << 31) && vocab > 0 && d > 0,
                "embedding_forward: bad sizes n ", n, ", vocab ", vocab, ", d ", d);
  KERNELS_CHECK(status != nullptr, "embedding_forward: null status word");
  CUDA_CHECK(cudaMemsetAsync(status, 0xff, sizeof(uint64_t), stream));
  if (n == 0) return;
  KERNELS_CHECK(out && ids && table, "embedding_forward: null pointer");
  const size_t row_bytes = static_cast<size_t>(d) * elem_bytes(type);
  const unsigned grid = static_cast<unsigned>(n);
  auto status_ull = reinterpret_cast<unsigned long long*>(status);
  auto launch = [&](auto unit) {
    using W = decltype(unit);
    const int64_t units = static_cast<int64_t>(row_bytes / sizeof(W));
    const unsigned threads = detail::round_up_warp(units < kGatherThreads ? units : kGatherThreads);
    ptx::launch(gather_kernel<W>, grid, threads, 0, stream, static_cast<W*>(out), ids,
                static_cast<const W*>(table), n, vocab, units, status_ull);
  };
  if (row_bytes % 16 == 0 && detail::aligned(out, 16) && detail::aligned(table, 16)) launch(uint4{});
  else if (row_bytes % 4 == 0 && detail::aligned(out, 4) && detail::aligned(table, 4)) launch(uint32_t{});
  else launch(uint16_t{});
  CUDA_CHECK_LAUNCH("embedding_forward");
}

size_t embedding_backward_workspace_bytes(int64_t n, int64_t vocab) {
  KERNELS_CHECK(n >= 0 && n < (int64_t(1) << 31) && vocab > 0,
                "embedding_backward: bad sizes n ", n, ", vocab ", vocab);
  return n == 0 ? 0 : layout(n, vocab).total;
}

void embedding_backward(void* dtable, const void* dout, const int32_t* ids, ElemType type,
                        int64_t n, int64_t vocab, int64_t d, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream) {
  detail::LaunchRange range("embedding_backward");
  check_type("embedding_backward", type);
  KERNELS_CHECK(n >= 0 && n < (int64_t(1) << 31) && vocab > 0 && d > 0,
                "embedding_backward: bad sizes n ", n, ", vocab ", vocab, ", d ", d);
  KERNELS_CHECK(dtable != nullptr, "embedding_backward: null dtable");
  CUDA_CHECK(cudaMemsetAsync(dtable, 0, static_cast<size_t>(vocab * d) * elem_bytes(type), stream));
  if (n == 0) return;
  KERNELS_CHECK(dout && ids, "embedding_backward: null input pointer");
  const Workspace w = layout(n, vocab);
  KERNELS_CHECK(workspace != nullptr && workspace_bytes >= w.total && detail::aligned(workspace, 256),
                "embedding_backward: workspace of ", workspace_bytes, " bytes (256-aligned) needed ",
                w.total);
  char* base = static_cast<char*>(workspace);
  auto* keys_out = reinterpret_cast<uint32_t*>(base + w.keys_out);
  auto* pos_in = reinterpret_cast<int32_t*>(base + w.pos_in);
  auto* pos_out = reinterpret_cast<int32_t*>(base + w.pos_out);
  const unsigned iota_grid = static_cast<unsigned>((n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096);
  ptx::launch(iota_kernel, iota_grid, 256, 0, stream, pos_in, n);
  CUDA_CHECK_LAUNCH("embedding_backward (positions)");
  size_t temp_bytes = w.temp_bytes;
  CUDA_CHECK(sort_pairs(base + w.temp, temp_bytes, reinterpret_cast<const uint32_t*>(ids),
                        keys_out, pos_in, pos_out, static_cast<int>(n), key_bits(vocab), stream));
  const size_t pack = 16;
  const bool vec = (static_cast<size_t>(d) * elem_bytes(type)) % pack == 0 &&
                   detail::aligned(dtable, pack) && detail::aligned(dout, pack);
  if (type == ElemType::F32) segments_for<F32T>(vec, dtable, dout, keys_out, pos_out, n, vocab, d, stream);
  else segments_for<BF16T>(vec, dtable, dout, keys_out, pos_out, n, vocab, d, stream);
}

}  // namespace kernels
