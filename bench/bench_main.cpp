// engine_bench's main: Google Benchmark's, plus the device in the run's context
// (console header and the JSON "context" object), or why there is none.
#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <string>

#include "engine/backend.h"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::string reason;
  if (engine::cuda_available(&reason)) {
    int device = 0;
    cudaDeviceProp prop{};
    if (cudaGetDevice(&device) == cudaSuccess &&
        cudaGetDeviceProperties(&prop, device) == cudaSuccess) {
      benchmark::AddCustomContext("device", prop.name);
      benchmark::AddCustomContext("compute_capability",
                                  std::to_string(prop.major) + "." + std::to_string(prop.minor));
      benchmark::AddCustomContext("sm_count", std::to_string(prop.multiProcessorCount));
    }
  } else {
    benchmark::AddCustomContext("device", "none (" + reason + ")");
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
