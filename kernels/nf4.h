// NF4 kernels: quantize and dequantize (kernels/nf4.cu), and the direct few-token
// matmul (kernels/nf4_matmul.cu).
// Host-includable launchers over raw device pointers, queued on `stream`; each checks its
// preconditions and the launch and throws kernels::Error. The format is bitsandbytes' nf4
// (kernels/math/nf4.h, engine/quant/nf4.h):
//
//   W, n values flattened row-major, blocks of 64:  absmax_b = max |x| over block b
//   nibble  = nearest NF4 code to x * (1 / absmax_b)   (kmath::nf4_quantize)
//   packed  = u8 [ceil(n / 2)], value 2j in the high nibble of byte j (odd n: low nibble 7)
//   double quantization of absmax (blocks of 256):
//     offset  = mean(absmax), summed in double in index order, rounded once (as the CPU)
//     nested  = max |absmax - offset| per 256-block (f32)
//     q       = dynamic-map code of (absmax - offset) * (1 / nested)   (u8)
//   dequantize: W' = code[nibble] * absmax',  absmax' = map[q] * nested + offset
//               (fp32, each product and sum rounded separately, then rounded to the output)
//
// Which kernels exist and why:
//   nf4_quantize          one warp per 64-block: the block max by shuffles, two values per
//                         lane, one packed byte per lane. Bit-identical to quantize_nf4_blocks.
//   nf4_double_quantize   the offset with one CTA: a parallel double sum that is used only when
//                         it is provably exact (kernels/nf4_layout.h), else the sequential sum in
//                         index order, so the offset always equals the CPU's; then one CTA per
//                         256-block for nested and the codes.
//   nf4_dequantize        streaming, for training-sized M (dequantize once, then a GEMM): one
//                         16-byte load per lane of packed bytes, the scales decoded on the fly,
//                         the code table in shared memory, 16-byte coalesced stores.
//   nf4_matmul_small_m    y = x W^T for M <= 64 (evaluation, generation) straight from NF4,
//                         never writing the dense W: bf16 tensor cores (mma.sync m16n8k16)
//                         with W decoded in registers, x staged in shared memory with cp.async,
//                         fp32 accumulation, split-K with a fixed-order reduction. Any K that
//                         is not a multiple of 128 takes a simple CUDA-core kernel.
// Determinism: no atomics; every reduction has a fixed order that depends on the shape only.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/elementwise.h"  // ElemType

namespace kernels {

// The per-block scales of an NF4 weight on the device: double-quantized (absmax_q != null)
// or plain fp32 absmax.
struct Nf4Scales {
  const uint8_t* absmax_q = nullptr;  // u8 [blocks], dynamic-map codes   (double-quantized)
  const float* nested = nullptr;      // f32 [ceil(blocks / 256)]         (double-quantized)
  float offset = 0.0f;                // mean of the fp32 absmax          (double-quantized)
  const float* absmax = nullptr;      // f32 [blocks]                     (plain)
};

// x: f32 or bf16 [n] -> packed u8 [ceil(n / 2)], absmax f32 [ceil(n / 64)].
void nf4_quantize(const void* x, ElemType x_type, int64_t n, uint8_t* packed, float* absmax,
                  cudaStream_t stream);

// How nf4_double_quantize sums absmax for the offset: Auto takes the parallel sum when it is
// exact and the sequential one otherwise; Sequential always sums in index order (for tests).
enum class Nf4OffsetSum : int { Auto = 0, Sequential = 1 };

// absmax f32 [blocks] -> *offset (one f32 in device memory), absmax_q u8 [blocks],
// nested f32 [ceil(blocks / 256)]. blocks > 0.
void nf4_double_quantize(const float* absmax, int64_t blocks, float* offset, uint8_t* absmax_q,
                         float* nested, cudaStream_t stream,
                         Nf4OffsetSum sum = Nf4OffsetSum::Auto);

// packed + scales -> out [n], bf16 or f32: bitwise equal to the CPU's dequantize_nf4 rounded
// to the output type (NaN payloads aside).
void nf4_dequantize(void* out, ElemType out_type, const uint8_t* packed, const Nf4Scales& scales,
                    int64_t n, cudaStream_t stream);

// Workspace nf4_matmul_small_m needs for this shape (0 when it needs none).
size_t nf4_matmul_small_m_workspace_bytes(int64_t m, int64_t n, int64_t k);

// y bf16 [m, n] = x bf16 [m, k] @ W^T, W [n, k] NF4 (packed + scales), 0 <= m <= 64:
//   y[i, j] = bf16( sum_k x[i, k] * bf16(W'[j, k]) ), fp32 accumulation.
// W' is rounded to bf16 as the dense path (nf4_dequantize to bf16, then a bf16 GEMM) does.
// `workspace` holds at least nf4_matmul_small_m_workspace_bytes(m, n, k) bytes of device memory.
void nf4_matmul_small_m(void* y, const void* x, const uint8_t* packed, const Nf4Scales& scales,
                        int64_t m, int64_t n, int64_t k, void* workspace, size_t workspace_bytes,
                        cudaStream_t stream);

}  // namespace kernels
