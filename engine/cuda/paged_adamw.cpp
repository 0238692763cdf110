// The CUDA half of PagedAdamW (engine/optim/paged_adamw.h): the states stream from pinned
// host memory through the device pages, double-buffered.
//
// Streams: S = the current (compute) stream, C = a copy stream of this thread. For chunk k
// in page k % 2:
//   C: copy chunk k in -> record loaded[page]         (issued one chunk ahead)
//   S: wait loaded[page] -> update kernels -> record updated[page]
//   C: wait updated[page] -> copy chunk k back
// C issues "in k+1" before "back k", so the copy of the next chunk overlaps the update of
// this one; "in k+2" reuses page k % 2 only after "back k" (C's own order). After the last
// chunk S waits for C's final copy, so whatever S queues next (and a synchronisation of S,
// as state() does) sees the states home. No host synchronisation anywhere.
#include <cuda_runtime_api.h>

#include <vector>

#include "engine/cuda/runtime.h"
#include "engine/optim/paged_adamw.h"
#include "kernels/adamw.h"
#include "kernels/adamw8bit.h"
#include "kernels/check.h"

namespace engine::backend {

namespace {

// This thread's copy stream and events, made on first use and kept (like the thread's
// compute stream, engine/cuda/runtime.cpp).
struct CopyPipeline {
  int device = -1;
  cudaStream_t copy = nullptr;
  cudaEvent_t loaded[optim::kOptimizerPages] = {};
  cudaEvent_t updated[optim::kOptimizerPages] = {};
  cudaEvent_t copied_back = nullptr;
  CopyPipeline() = default;
  CopyPipeline(const CopyPipeline&) = delete;
  CopyPipeline& operator=(const CopyPipeline&) = delete;
  ~CopyPipeline() {  // queued work still completes; errors at teardown are ignored
    if (!copy) return;
    for (int k = 0; k < optim::kOptimizerPages; ++k) {
      (void)cudaEventDestroy(loaded[k]);
      (void)cudaEventDestroy(updated[k]);
    }
    (void)cudaEventDestroy(copied_back);
    (void)cudaStreamDestroy(copy);
  }
};

CopyPipeline& pipeline() {
  thread_local CopyPipeline p;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  if (!p.copy) {
    p.device = device;
    CUDA_CHECK(cudaStreamCreateWithFlags(&p.copy, cudaStreamNonBlocking));
    for (int k = 0; k < optim::kOptimizerPages; ++k) {
      CUDA_CHECK(cudaEventCreateWithFlags(&p.loaded[k], cudaEventDisableTiming));
      CUDA_CHECK(cudaEventCreateWithFlags(&p.updated[k], cudaEventDisableTiming));
    }
    CUDA_CHECK(cudaEventCreateWithFlags(&p.copied_back, cudaEventDisableTiming));
  }
  ENGINE_CHECK(p.device == device, "paged AdamW: this thread's copy stream is on device ", p.device,
               ", the current device is ", device);
  return p;
}

// Queues the update of one chunk (in `page`) on `stream`: one launch for its fp32 segments,
// one for its 8-bit ones.
void update_chunk(const std::vector<Tensor>& params, const optim::StateChunk& chunk, uint8_t* page,
                  const kmath::AdamWStep& step, cudaStream_t stream) {
  std::vector<kernels::AdamWTensor> fp32;
  std::vector<kernels::AdamW8bitTensor> eight_bit;
  std::vector<Tensor> keep;  // gradients converted to f32 stay alive until the launch is queued
  const Device device = params[0].device();
  for (const optim::StateSegment& seg : chunk.segments) {
    const Tensor& param = params[seg.param];
    Tensor g = param.grad();
    if (!g.defined()) continue;
    ENGINE_CHECK(g.device() == device && g.shape() == param.shape(), "paged AdamW: gradient ",
                 g.str(), " does not match parameter ", param.str());
    if (g.dtype() != DType::F32) keep.push_back(g = g.to_dtype(DType::F32));
    float* p = param.data<float>() + seg.begin;
    const float* gp = g.data<float>() + seg.begin;
    const int64_t n = seg.end - seg.begin;
    if (seg.quantized)
      eight_bit.push_back({p, gp, page + seg.m, page + seg.v,
                           reinterpret_cast<float*>(page + seg.absmax_m),
                           reinterpret_cast<float*>(page + seg.absmax_v), n});
    else
      fp32.push_back({p, gp, reinterpret_cast<float*>(page + seg.m),
                      reinterpret_cast<float*>(page + seg.v), n});
  }
  // The caching allocator is stream-ordered: freeing a workspace after queueing is safe.
  if (!fp32.empty()) {
    const int n = static_cast<int>(fp32.size());
    Tensor ws = Tensor::empty({static_cast<int64_t>(kernels::adamw_workspace_bytes(n))}, DType::U8,
                              device);
    kernels::adamw_step(fp32.data(), n, step, ws.raw_data(), ws.nbytes(), stream);
  }
  if (!eight_bit.empty()) {
    const int n = static_cast<int>(eight_bit.size());
    Tensor ws = Tensor::empty({static_cast<int64_t>(kernels::adamw8bit_workspace_bytes(n))},
                              DType::U8, device);
    kernels::adamw8bit_step(eight_bit.data(), n, step, ws.raw_data(), ws.nbytes(), stream);
  }
}

}  // namespace

void device_paged_adamw_step(const std::vector<Tensor>& params,
                             const std::vector<optim::StateChunk>& chunks, uint8_t* host_state,
                             std::vector<Tensor>& pages, const kmath::AdamWStep& step) {
  if (chunks.empty()) return;
  ENGINE_CHECK(!pages.empty() && (chunks.size() == 1 || pages.size() >= 2),
               "paged AdamW: ", pages.size(), " device pages for ", chunks.size(), " chunks");
  CopyPipeline& cp = pipeline();
  const cudaStream_t compute = cuda::current_stream();
  const size_t num_pages = pages.size();
  auto page_of = [&](size_t k) { return static_cast<uint8_t*>(pages[k % num_pages].raw_data()); };
  auto load = [&](size_t k) {
    CUDA_CHECK(cudaMemcpyAsync(page_of(k), host_state + chunks[k].offset, chunks[k].bytes,
                               cudaMemcpyHostToDevice, cp.copy));
    CUDA_CHECK(cudaEventRecord(cp.loaded[k % num_pages], cp.copy));
  };
  load(0);
  for (size_t k = 0; k < chunks.size(); ++k) {
    if (k + 1 < chunks.size()) load(k + 1);
    const size_t slot = k % num_pages;
    CUDA_CHECK(cudaStreamWaitEvent(compute, cp.loaded[slot], 0));
    update_chunk(params, chunks[k], page_of(k), step, compute);
    CUDA_CHECK(cudaEventRecord(cp.updated[slot], compute));
    CUDA_CHECK(cudaStreamWaitEvent(cp.copy, cp.updated[slot], 0));
    CUDA_CHECK(cudaMemcpyAsync(host_state + chunks[k].offset, page_of(k), chunks[k].bytes,
                               cudaMemcpyDeviceToHost, cp.copy));
  }
  CUDA_CHECK(cudaEventRecord(cp.copied_back, cp.copy));
  CUDA_CHECK(cudaStreamWaitEvent(compute, cp.copied_back, 0));
}

}  // namespace engine::backend
