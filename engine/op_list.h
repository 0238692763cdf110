// The list of ops: one row per op. OpId (engine/op.h), the registry's rows
// (engine/op_registry.cpp), the CPU declarations (engine/cpu/ops.h) and the CUDA ones
// (engine/cuda/ops.h) are all generated from it, so adding an op is one row here plus
// its implementations, its typed wrapper in engine/ops.h, and its harness cases.
//
// X(Id, name, inputs, outputs, cuda):
//   Id       the OpId enumerator
//   name     the op's name (in errors and NVTX ranges) and the prefix of its functions:
//            engine::cpu::<name>_forward / _backward, and on CUDA
//            engine::cuda_ops::<name>_forward / _backward
//   inputs, outputs   tensor counts; the last optional_inputs(Id) inputs (engine/op.h) may
//            be left off (packing: attention's doc_start, rope's positions)
//   cuda     CUDA        its own CUDA implementation (engine/cuda/)
//            NO_CUDA     none yet: call_op on a CUDA tensor is an error naming the op
//            ANY_DEVICE  only touches shapes: the CPU functions run on every device
#pragma once

#define ENGINE_OPS(X)                                              \
  X(Matmul, matmul, 2, 1, CUDA)                                    \
  X(Add, add, 2, 1, CUDA)                                          \
  X(Mul, mul, 2, 1, CUDA)                                          \
  X(Scale, scale, 1, 1, CUDA)                                      \
  X(Sum, sum, 1, 1, NO_CUDA)                                       \
  X(Mean, mean, 1, 1, NO_CUDA)                                     \
  X(Reshape, reshape, 1, 1, ANY_DEVICE)                            \
  X(RmsNorm, rms_norm, 2, 1, CUDA)                                 \
  X(Rope, rope, 2, 1, CUDA)                                        \
  X(Silu, silu, 1, 1, CUDA)                                        \
  X(SwiGLU, swiglu, 2, 1, CUDA)                                    \
  X(Softmax, softmax, 1, 1, NO_CUDA)                               \
  X(Attention, attention, 4, 1, CUDA)                              \
  X(Embedding, embedding, 2, 1, CUDA)                              \
  X(CrossEntropy, cross_entropy, 2, 1, NO_CUDA)                    \
  X(Dropout, dropout, 1, 1, CUDA)                                  \
  X(LoraLinear, lora_linear, 3, 1, CUDA)                           \
  X(LmHeadCrossEntropy, lm_head_cross_entropy, 3, 1, CUDA)      \
  X(LmHeadLogprobs, lm_head_logprobs, 3, 1, CUDA)

// Declares <name>_forward and <name>_backward with the registry's signatures
// (engine/op.h), in the namespace the macro is used in.
#define ENGINE_DECLARE_OP(name)                                                       \
  std::vector<Tensor> name##_forward(OpContext& ctx, const std::vector<Tensor>& in); \
  std::vector<Tensor> name##_backward(OpContext& ctx, const std::vector<Tensor>& grad_out);
