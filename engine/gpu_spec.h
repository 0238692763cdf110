// The GPUs a dry run (train70b --dry-run, docs/memory.md "Dry run") can stand in for:
// the device properties the engine and its kernels read (compute capability, SM count,
// opt-in shared memory per block, memory size). Plain data, in every build, so that the
// flag is checked the same way everywhere; only the dry CUDA runtime (engine/dry/) uses
// the values.
#pragma once
#include <cstddef>
#include <string>

namespace engine {

struct GpuSpec {
  std::string name = "a100-80gb";  // or "a100 with <the byte count given>"
  int major = 8, minor = 0;    // compute capability
  int sms = 108;               // streaming multiprocessors
  size_t shared_per_block_optin = 163 * 1024;  // cudaDevAttrMaxSharedMemoryPerBlockOptin
  size_t shared_per_sm = 164 * 1024;
  size_t total_memory = size_t{80} << 30;  // bytes (cudaDeviceProp::totalGlobalMem)
  int l2_bytes = 40 << 20;
};

// a100-80gb (sm_80, 108 SMs, 80 GiB, 163 KiB opt-in shared memory), h100-80gb (sm_90,
// 132 SMs, 80 GiB, 227 KiB), h200 (sm_90, 132 SMs, 143,771,000,832 bytes, 227 KiB), or a
// byte count (an A100 with that much memory; suffixes KiB, MiB, GiB, KB, MB, GB).
// Throws engine::InputError naming the value (the caller adds the flag).
GpuSpec parse_gpu_spec(const std::string& text);

// True in train70b-dry (set by its main before anything runs): the CUDA runtime executes
// nothing, so every value read back from the device is a placeholder (zeros). Code whose
// control flow would act on such a value (a status word, a check) must not.
bool dry_run_active();
void set_dry_run_active(bool active);

// The properties of CUDA device `device` as a GpuSpec (name: the device's), from the
// runtime: the real GPU, or in a dry run the one --gpu chose. Throws engine::Error when no
// CUDA device can be used (engine/cuda/device_spec.cpp; engine/backend.cpp without CUDA).
GpuSpec cuda_device_spec(int device = 0);

}  // namespace engine
