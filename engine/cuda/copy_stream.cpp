// The offload copy stream (engine/cuda/copy_stream.h).
#include "engine/cuda/copy_stream.h"

#include <cuda_runtime_api.h>
#include <nvtx3/nvToolsExtCudaRt.h>

#include "engine/cuda/runtime.h"
#include "kernels/check.h"

namespace engine::cuda {

namespace {

// One per process, never destroyed (copies may be in flight at exit).
cudaStream_t copy_stream() {
  static cudaStream_t stream = [] {
    cudaStream_t s = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    nvtxNameCudaStreamA(s, "offload copies");
    return s;
  }();
  return stream;
}

cudaEvent_t record(cudaStream_t stream) {
  cudaEvent_t e = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(e, stream));
  return e;
}

}  // namespace

CopyEvent copy_after_current(void* dst, const void* src, size_t bytes) {
  cudaStream_t copies = copy_stream();
  cudaEvent_t written = record(current_stream());
  CUDA_CHECK(cudaStreamWaitEvent(copies, written, 0));
  CUDA_CHECK(cudaEventDestroy(written));  // released once it completes
  if (bytes > 0) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, copies));
  return record(copies);
}

void current_waits(CopyEvent event) {
  auto e = static_cast<cudaEvent_t>(event);
  CUDA_CHECK(cudaStreamWaitEvent(current_stream(), e, 0));
  CUDA_CHECK(cudaEventDestroy(e));
}

}  // namespace engine::cuda
