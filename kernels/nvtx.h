// NVTX ranges for profilers (Nsight Systems): the engine's one domain, "qlora", and an
// RAII range in it. Header-only, like NVTX 3 itself, so that the kernel launchers and the
// engine (engine/nvtx.h) open their ranges in the same domain without kernels/ depending
// on the engine.
//
// The build defines ENGINE_WITH_NVTX=1 wherever it found the NVTX 3 headers (they come
// with the CUDA toolkit; a CPU-only build uses them too when the toolkit is installed);
// otherwise every function here is empty. With no tool attached an NVTX call costs one
// indirect call to an empty function; a tool attaches through NVTX_INJECTION64_PATH
// (nsys, or the recorder that tests/nvtx_injection builds to check these ranges).
#pragma once
#include <cstdint>

#if ENGINE_WITH_NVTX
#include <nvtx3/nvToolsExt.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace kernels::nvtx {

inline constexpr const char* kDomainName = "qlora";

#if ENGINE_WITH_NVTX
// The domain, created on first use. An inline function's static is one object in the
// whole program, whichever compiler (host or nvcc) built the caller: one domain.
inline nvtxDomainHandle_t domain() {
  static const nvtxDomainHandle_t handle = nvtxDomainCreateA(kDomainName);
  return handle;
}

// `name` is read only during the call (tools copy it).
inline void push(const char* name) {
  nvtxEventAttributes_t attr{};
  attr.version = NVTX_VERSION;
  attr.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
  attr.messageType = NVTX_MESSAGE_TYPE_ASCII;
  attr.message.ascii = name;
  nvtxDomainRangePushEx(domain(), &attr);
}

inline void pop() { nvtxDomainRangePop(domain()); }

// Names the calling OS thread in timelines (NVTX wants the kernel's thread id).
inline void name_this_thread(const char* name) {
  nvtxNameOsThreadA(static_cast<uint32_t>(::syscall(SYS_gettid)), name);
}
#else
inline void push(const char*) {}
inline void pop() {}
inline void name_this_thread(const char*) {}
#endif

// A range open from construction to destruction, on the calling thread.
class Range {
 public:
  explicit Range(const char* name) { push(name); }
  ~Range() { pop(); }
  Range(const Range&) = delete;
  Range& operator=(const Range&) = delete;
};

}  // namespace kernels::nvtx
