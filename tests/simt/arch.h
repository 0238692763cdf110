// The GPU the SIMT emulation build pretends to be: the per-architecture limits that
// decide whether a launch is legal, like nvcc's --gpu-architecture. The emulator
// (simt.cpp) enforces them at launch; the CPU runtime double (fake_cudart.cpp) reports
// them from cudaGetDeviceProperties and cudaDeviceGetAttribute, so launchers that size
// their tiles by the device see the same numbers they would see on that GPU.
//
// Selected by the environment variable SIMT_GPU (sm_80, sm_86, sm_89 or sm_90; read once,
// default sm_80, the A100 the engine is sized for). An unknown name aborts: a typo must
// not silently test another GPU.
//
// What is modelled and what is not:
// - shared memory per block (the opt-in maximum of cudaFuncAttributeMaxDynamicSharedMemorySize)
//   and threads per block: enforced for every launch;
// - registers: reported (per block, per SM), never checked. The emulator cannot know how
//   many registers ptxas gives a kernel; on a GPU a kernel that needs more than
//   regs_per_block / threads fails to launch, which only a GPU run (or ptxas -v) shows;
// - the SM count: reported as 4 on every architecture, not the real part's 84-132.
//   Blocks run one at a time here, and grids sized as SMs x blocks per SM (adamw,
//   grad_norm) would emulate hundreds of mostly idle blocks per call. SIMT_SMS overrides
//   it where a test needs a real part's count (fake_cudart.cpp).
#pragma once

#include <cstddef>

namespace simt {

struct Arch {
  const char* name;     // "sm_86"
  const char* example;  // a GPU of that architecture
  int major, minor;
  size_t shared_per_block_optin;  // cudaDevAttrMaxSharedMemoryPerBlockOptin
  size_t shared_per_sm;
  int max_threads_per_block;
  int max_threads_per_sm;
  int regs_per_block;  // 32-bit registers
  int regs_per_sm;
  int l2_bytes;
};

// Dynamic shared memory a kernel may use without cudaFuncSetAttribute, on every architecture.
constexpr size_t kDefaultDynamicShared = 48 * 1024;
// The emulated device's SM count (see above).
constexpr int kEmulatedSms = 4;

// The architecture of this process: SIMT_GPU, read once.
const Arch& arch();
// The table entry of `name`, or nullptr.
const Arch* find_arch(const char* name);

}  // namespace simt
