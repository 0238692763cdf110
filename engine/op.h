// The op registry: one row per op, generated from the op list (engine/op_list.h),
// naming its CPU reference and, where it exists, its CUDA implementation. call_op
// dispatches on the inputs' device and records an autograd node; engine/ops.h wraps
// each row in a typed function. Adding an op = a row in engine/op_list.h, its
// implementations, its wrapper, and its cases in tests/support/op_cases.cpp (the
// harness then checks gradients and CUDA parity): docs/architecture.md "Adding an op".
#pragma once
#include <memory>
#include <span>
#include <vector>

#include "engine/op_list.h"
#include "engine/tensor.h"
#include "kernels/math/rope.h"

namespace engine {

class FrozenLinear;

enum class OpId {
#define ENGINE_OP_ID(Id, name, inputs, outputs, cuda) Id,
  ENGINE_OPS(ENGINE_OP_ID)
#undef ENGINE_OP_ID
  kCount
};

// How many trailing inputs of an op may be left off: attention's doc_start and rope's
// positions, the per-token document layout of packed sequences (ops.h).
constexpr int optional_inputs(OpId id) {
  return id == OpId::Attention || id == OpId::Rope ? 1 : 0;
}

// Rotary embedding frequencies (theta, llama3 scaling): one struct, shared with the
// kernels' math.
using kmath::RopeConfig;

// Non-tensor arguments. Each op reads only the fields named in its comment in ops.h.
struct OpAttrs {
  bool transpose_a = false, transpose_b = false;  // matmul
  float factor = 1.0f;                              // scale: y = factor * x
  float softmax_scale = 0.0f;                       // attention: scales q . k (0: 1/sqrt(D))
  float lora_scaling = 1.0f;                        // lora_linear: s = lora_alpha / r
  float eps = 1e-5f;                                // rmsnorm
  float p = 0.0f;                                   // dropout probability
  uint64_t seed = 0, offset = 0;                    // dropout stream
  int64_t position_offset = 0;                      // rope: position of the first token
  RopeConfig rope;
  int ignore_index = -100;                          // cross_entropy, lm_head_cross_entropy
  int64_t chunk_rows = 0;                           // lm_head_cross_entropy: rows per chunk (0: auto)
  int64_t segment_rows = 0;                         // lm_head_logprobs: rows per output (0: all)
  bool segment_mean = false;                        // lm_head_logprobs: mean instead of sum
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
  // Whether backward must produce input i's gradient. needs_grad is empty when a test
  // or bench calls an op's backward directly: then every gradient is wanted.
  bool wants_grad(size_t i) const { return i >= needs_grad.size() || needs_grad[i]; }
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
