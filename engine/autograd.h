// Reverse-mode automatic differentiation.
//
// Every differentiable op call that sees an input requiring a gradient records a
// Node: the op's saved context plus one edge per input. backward(loss) orders the
// nodes reachable from the loss topologically, runs each node's hand-written
// backward once all gradients flowing into it are summed, and accumulates into the
// `grad` of leaf tensors that require it. Saved tensors are stored detached, so a
// node never keeps its own outputs alive (no reference cycles).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace engine {

// Where the gradient of one input goes: into another node's output slot, or into a
// leaf tensor's `grad`.
struct Edge {
  std::shared_ptr<Node> node;
  int output_index = 0;
  std::shared_ptr<TensorImpl> leaf;  // set when the input is a leaf that requires grad
};

class Node {
 public:
  virtual ~Node() = default;
  // One gradient per output in, one per input out (undefined where none flows).
  virtual std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) = 0;
  virtual std::string name() const = 0;
  std::vector<Edge> inputs;
  int num_outputs = 1;
};

// Gradient mode is thread-local. Inside a NoGradGuard no nodes are recorded.
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Sets grad mode for a scope (checkpoint's recomputation turns it back on).
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled);
  ~GradModeGuard();
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool previous_;
};

// True when grad mode is on and any of `inputs` requires a gradient.
bool should_record(const std::vector<Tensor>& inputs);
// Fills node->inputs from `inputs` and marks `outputs` as produced by `node`.
void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
            std::vector<Tensor>& outputs);

// Runs the backward pass from `roots` seeded with `grads` (same shapes). Gradients
// accumulate (+=) into leaves, so calling it for several micro-batches sums them.
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads);
// backward from a one-element loss, seeded with 1.
void backward(const Tensor& loss);

// Gradient checkpointing: runs fn(inputs) without recording, keeps only `inputs`
// (detached), and in backward re-runs fn with recording on and back-propagates
// through the recomputation. fn must be deterministic (seeded dropout is).
// offload: the kept inputs wait in pinned host memory (engine/offload.h): copied there
// on the copy stream right after they are saved, and back one checkpoint ahead of the
// recompute (a checkpoint's backward prefetches the inputs of the checkpoints its inputs
// come from, the previous layer). A no-op for CPU tensors.
using CheckpointFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;
std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                               bool offload = false);

}  // namespace engine
