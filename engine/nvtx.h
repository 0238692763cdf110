// NVTX ranges in the engine's one domain ("qlora"), for Nsight Systems timelines.
// RAII: a range opens in the constructor and closes in the destructor. In builds
// without CUDA the ranges compile to nothing.
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
