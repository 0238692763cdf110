// The dry CUDA runtime: what train70b-dry (train70b --dry-run, docs/memory.md "Dry run")
// links instead of libcudart and libcublasLt. The product's own nvcc-compiled objects
// (kernels, engine, models, trainer) run unchanged on top of it, so the dry run makes
// exactly the allocations, in exactly the order, that a run on the GPU makes.
//
// What is faked, and why:
// - device memory: cudaMalloc hands out addresses from one reserved, never committed
//   range of virtual memory (PROT_NONE), so a 70B run at 131,072 tokens "allocates"
//   100+ GB on a machine with 24 GB and no GPU; a stray host dereference of a device
//   pointer faults instead of reading garbage. Allocation never fails for lack of
//   memory: the run goes past the GPU's size, so that the report says by how much.
// - pinned host memory (cudaHostAlloc, cudaMallocHost): mmap(MAP_NORESERVE), so pages
//   nobody touches (offloaded checkpoints, paged optimizer states: only copies write
//   them, and copies are not executed) cost nothing;
// - kernel launches (nvcc's host stubs: __cudaPushCallConfiguration, __cudaLaunchKernel,
//   ...), copies, memsets and cuBLASLt matmuls are checked (launch limits of the GPU,
//   device ranges inside live allocations) but not executed. A copy into pageable host
//   memory fills it with zeros, the placeholder every host read of a device value sees;
//   the trainer marks such values in its log and metrics;
// - streams and events are handles; everything is complete when it is queued;
// - the device is one GPU of the chosen spec (engine/gpu_spec.h): its compute
//   capability, SM count, shared memory and memory size are what the kernels' launchers
//   and workspace sizes read, as on that GPU.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/gpu_spec.h"

namespace engine::dry {

// Chooses the GPU; call before the first CUDA call (default: a100-80gb).
void configure(const GpuSpec& spec);
const GpuSpec& device_spec();

struct Counters {
  size_t device_live = 0, device_peak = 0;  // bytes handed out by cudaMalloc
  size_t pinned_live = 0, pinned_peak = 0;  // bytes handed out by cudaHostAlloc
  uint64_t launches = 0, copies = 0, matmuls = 0;
};
Counters counters();
uint64_t matmul_count();  // cublasLtMatmul calls (dry_cublaslt.cpp)

// True for an address inside the dry device's range (any dry device pointer).
bool is_device_address(const void* p);

}  // namespace engine::dry
