// engine::cuda_device_spec (engine/gpu_spec.h) from the CUDA runtime's device properties.
#include <cuda_runtime_api.h>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/gpu_spec.h"
#include "kernels/check.h"

namespace engine {

GpuSpec cuda_device_spec(int device) {
  std::string reason;
  ENGINE_CHECK(cuda_available(&reason), "no CUDA device: ", reason);
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  GpuSpec s;
  s.name = p.name;
  s.major = p.major;
  s.minor = p.minor;
  s.sms = p.multiProcessorCount;
  s.shared_per_block_optin = p.sharedMemPerBlockOptin;
  s.shared_per_sm = p.sharedMemPerMultiprocessor;
  s.total_memory = p.totalGlobalMem;
  s.l2_bytes = p.l2CacheSize;
  return s;
}

}  // namespace engine
