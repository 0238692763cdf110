// The engine's ranges are those of kernels/nvtx.h, so that they and the kernel
// launchers' ranges share one domain; this file keeps the NVTX headers out of
// engine/nvtx.h and so out of everything that includes it.
#include "engine/nvtx.h"

#include "kernels/nvtx.h"

namespace engine {

NvtxRange::NvtxRange(const char* name) { kernels::nvtx::push(name); }
NvtxRange::~NvtxRange() { kernels::nvtx::pop(); }
void nvtx_name_thread(const char* name) { kernels::nvtx::name_this_thread(name); }

}  // namespace engine
