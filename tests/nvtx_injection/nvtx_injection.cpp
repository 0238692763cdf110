// An NVTX 3 tool that records what a program tells profilers, so that tests can check
// the engine's NVTX ranges without a GPU or Nsight. Load it into a program with
//
//   NVTX_INJECTION64_PATH=libnvtx_injection.so NVTX_RECORD_PATH=out.txt ./train70b ...
//
// The program's first NVTX call loads this library and calls InitializeInjectionNvtx2
// (nvtx3/nvtxDetail/nvtxInit.h), which asks the program's NVTX instance for its callback
// tables (core: unscoped ranges and names; core2: domains) and fills the slots recorded
// here; NVTX points every other slot at a no-op. At exit the events go to
// $NVTX_RECORD_PATH, one per line, in call order:
//
//   domain <domain> <name>        nvtxDomainCreateA; <domain> counts from 1
//   push <tid> <domain> <name>    nvtxDomainRangePushEx, or nvtxRangePushA/Ex (domain 0)
//   pop <tid> <domain>            nvtxDomainRangePop, or nvtxRangePop (domain 0)
//   thread <tid> <name>           nvtxNameOsThreadA
//
// <tid> is the calling thread's kernel id (what nvtxNameOsThread takes). Names are
// written with control characters replaced by '?', so each event stays one line.
#define NVTX_NO_IMPL  // a tool: the types and ids only, not a second NVTX instance
#include <nvtx3/nvToolsExt.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Recorder {
  std::mutex mutex;
  std::vector<std::string> events;
  std::vector<std::string> domain_names;  // index + 1 is the handle's value

  void add(std::string line) {
    std::lock_guard<std::mutex> lock(mutex);
    events.push_back(std::move(line));
  }
};

Recorder& recorder() {
  static Recorder* r = new Recorder;  // never destroyed: callbacks may come late in exit
  return *r;
}

std::string tid() { return std::to_string(static_cast<long>(::syscall(SYS_gettid))); }

std::string clean(const char* s) {
  std::string out = s ? s : "(null)";
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return out;
}

std::string message(const nvtxEventAttributes_t* attr) {
  if (attr && attr->messageType == NVTX_MESSAGE_TYPE_ASCII) return clean(attr->message.ascii);
  return "(non-ASCII message)";  // the engine only sends ASCII
}

// Handles are the numbers 1, 2, ... cast to pointers; 0 stands for the default domain.
uintptr_t domain_id(nvtxDomainHandle_t d) { return reinterpret_cast<uintptr_t>(d); }

nvtxDomainHandle_t NVTX_API domain_create(const char* name) {
  Recorder& r = recorder();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.domain_names.push_back(clean(name));
  const uintptr_t id = r.domain_names.size();
  r.events.push_back("domain " + std::to_string(id) + " " + r.domain_names.back());
  return reinterpret_cast<nvtxDomainHandle_t>(id);
}

int NVTX_API domain_push(nvtxDomainHandle_t d, const nvtxEventAttributes_t* attr) {
  recorder().add("push " + tid() + " " + std::to_string(domain_id(d)) + " " + message(attr));
  return 0;
}

int NVTX_API domain_pop(nvtxDomainHandle_t d) {
  recorder().add("pop " + tid() + " " + std::to_string(domain_id(d)));
  return 0;
}

int NVTX_API push_ex(const nvtxEventAttributes_t* attr) { return domain_push(nullptr, attr); }

int NVTX_API push_a(const char* name) {
  recorder().add("push " + tid() + " 0 " + clean(name));
  return 0;
}

int NVTX_API pop() { return domain_pop(nullptr); }

void NVTX_API name_os_thread(uint32_t thread, const char* name) {
  recorder().add("thread " + std::to_string(thread) + " " + clean(name));
}

void write_events() {
  const char* path = std::getenv("NVTX_RECORD_PATH");
  if (!path) return;
  Recorder& r = recorder();
  std::lock_guard<std::mutex> lock(r.mutex);
  FILE* f = std::fopen(path, "w");
  if (!f) {
    std::fprintf(stderr, "nvtx_injection: cannot write %s\n", path);
    return;
  }
  for (const std::string& e : r.events) std::fprintf(f, "%s\n", e.c_str());
  std::fclose(f);
}

// Points slot `id` of `module`'s callback table at `fn`; false when the program's NVTX
// has no such table or slot.
bool attach(const NvtxExportTableCallbacks* callbacks, NvtxCallbackModule module, unsigned id,
            NvtxFunctionPointer fn) {
  NvtxFunctionTable table = nullptr;
  unsigned size = 0;  // the highest valid id
  if (!callbacks->GetModuleFunctionTable(module, &table, &size) || !table || id > size) return false;
  *table[id] = fn;
  return true;
}

template <class F>
NvtxFunctionPointer fp(F f) {
  return reinterpret_cast<NvtxFunctionPointer>(f);
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int InitializeInjectionNvtx2(
    NvtxGetExportTableFunc_t get_export_table) {
  const auto* callbacks =
      static_cast<const NvtxExportTableCallbacks*>(get_export_table(NVTX_ETID_CALLBACKS));
  if (!callbacks || callbacks->struct_size < sizeof(NvtxExportTableCallbacks)) return 0;
  const bool ok =
      attach(callbacks, NVTX_CB_MODULE_CORE, NVTX_CBID_CORE_RangePushA, fp(&push_a)) &&
      attach(callbacks, NVTX_CB_MODULE_CORE, NVTX_CBID_CORE_RangePushEx, fp(&push_ex)) &&
      attach(callbacks, NVTX_CB_MODULE_CORE, NVTX_CBID_CORE_RangePop, fp(&pop)) &&
      attach(callbacks, NVTX_CB_MODULE_CORE, NVTX_CBID_CORE_NameOsThreadA, fp(&name_os_thread)) &&
      attach(callbacks, NVTX_CB_MODULE_CORE2, NVTX_CBID_CORE2_DomainCreateA, fp(&domain_create)) &&
      attach(callbacks, NVTX_CB_MODULE_CORE2, NVTX_CBID_CORE2_DomainRangePushEx, fp(&domain_push)) &&
      attach(callbacks, NVTX_CB_MODULE_CORE2, NVTX_CBID_CORE2_DomainRangePop, fp(&domain_pop));
  if (!ok) return 0;  // NVTX then unloads this library and turns every call into a no-op
  std::atexit(write_events);
  return 1;
}
