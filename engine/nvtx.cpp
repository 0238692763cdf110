// The engine's ranges are those of kernels/nvtx.h, so that they and the kernel
// launchers' ranges share one domain; this file keeps the NVTX headers out of
// engine/nvtx.h and so out of everything that includes it.
#include "engine/nvtx.h"

#include "engine/allocator.h"
#include "kernels/nvtx.h"

namespace engine {

// Each range is also a detail level of the memory owner (engine/allocator.h), so that a
// layer's working set is broken down by phase, layer and op without more annotations.
NvtxRange::NvtxRange(const char* name) {
  kernels::nvtx::push(name);
  memory_owner::push_detail(name);
}
NvtxRange::~NvtxRange() {
  memory_owner::pop_detail();
  kernels::nvtx::pop();
}
void nvtx_name_thread(const char* name) { kernels::nvtx::name_this_thread(name); }

}  // namespace engine
