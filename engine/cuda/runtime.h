// The CUDA side of engine/backend.h: copies, conversions, fills and accumulation on
// the device, the current stream, and the per-device caching allocator. Only
// compiled in CUDA builds; code above the backend calls engine::backend instead.
#pragma once
#include <cuda_runtime_api.h>

#include "engine/allocator.h"

namespace engine {
class Tensor;
}

namespace engine::cuda {

// The stream all engine work is queued on (one per thread; default: a created,
// non-blocking stream so that nothing serialises on the legacy default stream).
cudaStream_t current_stream();
void set_current_stream(cudaStream_t stream);

void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void convert(Tensor& dst, const Tensor& src);
void fill(Tensor& dst, float value);
void accumulate(Tensor& dst, const Tensor& src);
void synchronize();
// Philox draws, element i from counter offset + i (uniform in [a, b) or normal(a, b)).
void fill_random(Tensor& t, bool normal, float a, float b, uint64_t seed, uint64_t offset);

}  // namespace engine::cuda
