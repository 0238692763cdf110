// Device-independent primitives that tensors need (copies, conversions, fills,
// in-place accumulation). Each dispatches to the host loop or to the CUDA backend,
// so code above this layer never writes #ifdef ENGINE_WITH_CUDA.
#pragma once
#include <string>

#include "engine/dtype.h"

namespace engine {

class Tensor;

// True when a CUDA device can be used. When false, `reason` says why (a CPU-only
// build, no driver, no device): GPU tests print it when they skip.
bool cuda_available(std::string* reason = nullptr);

namespace backend {
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
// dst and src on the same device, same numel; f32/bf16/f16 in any combination.
void convert(Tensor& dst, const Tensor& src);
void fill(Tensor& dst, float value);
// dst += src, elementwise, same shape, dtype and device (used to accumulate gradients).
void accumulate(Tensor& dst, const Tensor& src);
// Waits for queued device work (a no-op on the CPU).
void synchronize(Device device);
}  // namespace backend

}  // namespace engine
