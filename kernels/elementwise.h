// Launchers for the elementwise kernels (kernels/elementwise.cu). Host-includable:
// raw device pointers, an element count n, and the stream to queue on. Every
// launcher checks its preconditions and the launch, throwing kernels::Error; n == 0
// queues nothing. Outputs may alias inputs of the same dtype exactly (out == a), not
// partially.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace kernels {

// Element types of the elementwise kernels (values, not engine::DType, so that
// kernels/ needs no engine header).
enum class ElemType : int { F32 = 0, BF16 = 1, F16 = 2 };

const char* elem_type_name(ElemType t);

// Arithmetic: f32 or bf16 storage, fp32 math. All operands share `type`.
void add(void* out, const void* a, const void* b, ElemType type, int64_t n, cudaStream_t stream);
void mul(void* out, const void* a, const void* b, ElemType type, int64_t n, cudaStream_t stream);
void scale(void* out, const void* x, float factor, ElemType type, int64_t n, cudaStream_t stream);
// dst += src (gradient accumulation).
void accumulate(void* dst, const void* src, ElemType type, int64_t n, cudaStream_t stream);

// Activations, math from kernels/math/activations.h.
void silu_forward(void* y, const void* x, ElemType type, int64_t n, cudaStream_t stream);
// dx = dy * silu'(x)
void silu_backward(void* dx, const void* dy, const void* x, ElemType type, int64_t n,
                   cudaStream_t stream);
void swiglu_forward(void* y, const void* gate, const void* up, ElemType type, int64_t n,
                    cudaStream_t stream);
// dgate = dy * up * silu'(gate), dup = dy * silu(gate)
void swiglu_backward(void* dgate, void* dup, const void* dy, const void* gate, const void* up,
                     ElemType type, int64_t n, cudaStream_t stream);

// Any of f32/bf16/f16 to any other, round to nearest even; bf16 rounding is
// bit-identical to kmath::float_to_bf16_bits (NaN payloads included).
void convert(void* dst, ElemType dst_type, const void* src, ElemType src_type, int64_t n,
             cudaStream_t stream);
// Every element = value rounded to `type` (f32/bf16/f16).
void fill(void* dst, ElemType type, float value, int64_t n, cudaStream_t stream);
// Every 32-bit word = bits (i32 tensors, or a float's exact bit pattern).
void fill_u32(void* dst, uint32_t bits, int64_t n, cudaStream_t stream);

// Philox draws (kernels/math/philox.h), element i from counter offset + i:
//   uniform: a + (b - a) * philox_uniform(seed, offset, i)   (bitwise equal to the CPU)
//   normal:  a + b * philox_normal(seed, offset, i)          (mean a, stddev b; a few ulp)
// Stored as f32 or bf16.
void philox_fill(void* dst, ElemType type, bool normal, float a, float b, uint64_t seed,
                 uint64_t offset, int64_t n, cudaStream_t stream);

}  // namespace kernels
