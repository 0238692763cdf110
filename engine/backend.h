// Device-independent primitives that tensors need (copies, conversions, fills,
// in-place accumulation), and the entry points of the CUDA halves of the optimizer and
// of NF4 weights. Each dispatches to the host loop or to the CUDA backend, so code above
// this layer never writes #ifdef ENGINE_WITH_CUDA.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "kernels/math/adamw.h"

namespace engine {

class Tensor;
namespace quant {
struct Nf4Weight;
}

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
// Philox draws into t (f32 or bf16), element i from counter offset + i: uniform in
// [a, b), or normal with mean a and standard deviation b.
void fill_random(Tensor& t, bool normal, float a, float b, uint64_t seed, uint64_t offset);

// ---- device-only entry points: every tensor is on one CUDA device. A build without
// CUDA has no such tensors; there these throw.

// The optimizer's CUDA half (engine/cuda/adamw.cpp), one fused launch each.
// Sum of squares of every element (f32/bf16), in double in a fixed order; one double
// comes back to the host.
double device_sum_squares(const std::vector<Tensor>& tensors);
// t *= factor, in place (f32 or bf16).
void device_scale(Tensor& t, float factor);
// kmath::adamw_update of params[i] for each i in `indices`, from its .grad, with the
// moments m[i] and v[i].
void device_adamw_step(const std::vector<Tensor>& params, std::vector<Tensor>& m,
                       std::vector<Tensor>& v, const std::vector<size_t>& indices,
                       const kmath::AdamWStep& step);

// NF4 weights on the device (engine/cuda/nf4_linear.cpp; formats in engine/quant/nf4.h).
// dense f32/bf16/f16 [out, in] -> NF4 on the same device, bit-identical to quantize_nf4.
quant::Nf4Weight device_nf4_quantize(const Tensor& dense, bool double_quant);
// The dense weight in f32 or bf16 on the weight's device.
Tensor device_nf4_dequantize(const quant::Nf4Weight& w, DType dtype);
// x W^T by the small-M kernel; undefined where it does not apply (a weight off the
// device, x not bf16 on it, or too many rows): the caller then dequantizes.
Tensor device_nf4_matmul(const quant::Nf4Weight& w, const Tensor& x);

// engine::lm_head_eval on the device (engine/cuda/lm_head_eval.cpp): {loss f32 [N],
// argmax i32 [N]} (engine/lm_head_eval.h).
std::vector<Tensor> device_lm_head_eval(const Tensor& h, const Tensor& weight, const Tensor& targets,
                                        int ignore_index, int64_t chunk_rows);
}  // namespace backend

}  // namespace engine
