// The op registry: one row per op (engine/op_registry.cpp) naming its CPU reference
// and, where it exists, its CUDA implementation. call_op dispatches on the inputs'
// device and records an autograd node; engine/ops.h wraps each row in a typed
// function. Adding an op = an OpId, a row, its implementations, and its cases in
// tests/engine/op_cases.cpp (the harness then checks gradients and CUDA parity).
#pragma once
#include <memory>
#include <span>
#include <vector>

#include "engine/tensor.h"

namespace engine {

class FrozenLinear;

enum class OpId {
  Matmul, Add, Mul, Scale, Sum, Mean, Reshape,
  RmsNorm, Rope, Silu, SwiGLU, Softmax, Attention, Embedding, CrossEntropy, Dropout,
  LoraLinear,
  LmHeadCrossEntropy,
  kCount
};

// Rotary embedding frequencies, with optional Llama 3.1 ("llama3") scaling.
struct RopeConfig {
  float theta = 10000.0f;
  float scaling_factor = 0.0f;  // 0 = no llama3 scaling
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  float original_max_position = 8192.0f;
};

// Non-tensor arguments. Each op reads only the fields named in its comment in ops.h.
struct OpAttrs {
  bool transpose_a = false, transpose_b = false;  // matmul
  float scale = 1.0f;                               // scale; attention softmax scale (0: 1/sqrt(d))
  float eps = 1e-5f;                                // rmsnorm
  float p = 0.0f;                                   // dropout probability
  uint64_t seed = 0, offset = 0;                    // dropout stream
  int64_t position_offset = 0;                      // rope: position of the first token
  RopeConfig rope;
  int ignore_index = -100;                          // cross_entropy, lm_head_cross_entropy
  int64_t chunk_rows = 0;                           // lm_head_cross_entropy: rows per chunk (0: auto)
  Shape shape;                                      // reshape target
  std::shared_ptr<const FrozenLinear> frozen;       // lora_linear: the frozen base weight
};

// Per-call state shared by forward and backward.
struct OpContext {
  OpAttrs attrs;
  std::vector<Tensor> saved;        // what backward needs (detached)
  std::vector<Shape> input_shapes;
  std::vector<bool> needs_grad;     // per input: does backward have to produce it?
  void save(std::initializer_list<Tensor> tensors);
};

// Forward: inputs -> outputs (may call ctx.save). Backward: one gradient per output
// (undefined = zero) -> one gradient per input (undefined where !needs_grad).
using ForwardFn = std::vector<Tensor> (*)(OpContext& ctx, const std::vector<Tensor>& inputs);
using BackwardFn = std::vector<Tensor> (*)(OpContext& ctx, const std::vector<Tensor>& grad_outputs);

struct OpImpl {
  ForwardFn forward = nullptr;
  BackwardFn backward = nullptr;
  bool exists() const { return forward != nullptr; }
};

struct OpDef {
  OpId id;
  const char* name;
  int num_inputs;
  int num_outputs;
  OpImpl cpu;
  OpImpl cuda;  // empty where no CUDA implementation exists (or in a CPU-only build)
};

std::span<const OpDef> all_ops();
const OpDef& op_def(OpId id);

// Runs the op on the inputs' device and records it for autograd when needed.
std::vector<Tensor> call_op(OpId id, const std::vector<Tensor>& inputs, const OpAttrs& attrs = {});

}  // namespace engine
