#include "engine/nvtx.h"

#if ENGINE_WITH_CUDA
#include <nvtx3/nvToolsExt.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace engine {
namespace {
nvtxDomainHandle_t domain() {
  static nvtxDomainHandle_t handle = nvtxDomainCreateA("qlora");
  return handle;
}
}  // namespace

NvtxRange::NvtxRange(const char* name) {
  nvtxEventAttributes_t attr{};
  attr.version = NVTX_VERSION;
  attr.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
  attr.messageType = NVTX_MESSAGE_TYPE_ASCII;
  attr.message.ascii = name;
  nvtxDomainRangePushEx(domain(), &attr);
}
NvtxRange::~NvtxRange() { nvtxDomainRangePop(domain()); }
void nvtx_name_thread(const char* name) {
  nvtxNameOsThreadA(static_cast<uint32_t>(syscall(SYS_gettid)), name);
}
}  // namespace engine
#else
namespace engine {
NvtxRange::NvtxRange(const char*) {}
NvtxRange::~NvtxRange() {}
void nvtx_name_thread(const char*) {}
}  // namespace engine
#endif
