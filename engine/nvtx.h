// NVTX ranges in the engine's one domain ("qlora", kernels/nvtx.h), for Nsight Systems
// timelines. RAII: a range opens in the constructor and closes in the destructor. In a
// build without the NVTX headers (no CUDA toolkit, or -DENGINE_NVTX=OFF) they do nothing.
#pragma once

namespace engine {

class NvtxRange {
 public:
  explicit NvtxRange(const char* name);
  ~NvtxRange();
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

// Names the calling OS thread in profiler timelines.
void nvtx_name_thread(const char* name);

}  // namespace engine
