#include "engine/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "engine/backend.h"
#include "engine/nvtx.h"
#include "engine/offload.h"

namespace engine {

namespace {
thread_local bool g_grad_enabled = true;

void accumulate_into(Tensor& slot, const Tensor& g) {
  if (!g.defined()) return;
  if (!slot.defined()) {
    slot = g.clone();  // own the buffer: g may be shared with another consumer
  } else {
    ENGINE_CHECK(slot.shape() == g.shape(), "gradient shape ", g.shape().str(), " does not match ",
                 slot.shape().str());
    backend::accumulate(slot, g);
  }
}
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

bool should_record(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.requires_grad()) return true;
  return false;
}

void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
            std::vector<Tensor>& outputs) {
  node->inputs.clear();
  for (const Tensor& t : inputs) {
    Edge e;
    if (t.requires_grad()) {
      if (t.grad_fn()) {
        e.node = t.grad_fn();
        e.output_index = t.output_index();
      } else {
        e.leaf = t.impl_for_autograd();
      }
    }
    node->inputs.push_back(std::move(e));
  }
  node->num_outputs = static_cast<int>(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i) outputs[i].set_grad_fn(node, static_cast<int>(i));
}

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads) {
  ENGINE_CHECK(roots.size() == grads.size(), roots.size(), " roots but ", grads.size(), " gradients");
  NvtxRange range("backward");
  NoGradGuard no_grad;

  // Topological order by iterative DFS (deep models would overflow recursion).
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::unordered_map<Node*, int> pending;  // consumers not yet processed
  std::vector<std::pair<Node*, size_t>> stack;
  for (const Tensor& r : roots) {
    Node* n = r.grad_fn().get();
    if (n && seen.insert(n).second) stack.push_back({n, 0});
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next < node->inputs.size()) {
        Node* child = node->inputs[next++].node.get();
        if (!child) continue;
        pending[child] += 1;
        if (seen.insert(child).second) stack.push_back({child, 0});
      } else {
        order.push_back(node);
        stack.pop_back();
      }
    }
  }

  std::unordered_map<Node*, std::vector<Tensor>> grad_slots;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    ENGINE_CHECK(r.requires_grad(), "backward from a tensor that does not require grad");
    ENGINE_CHECK(grads[i].shape() == r.shape(), "seed gradient ", grads[i].shape().str(),
                 " for root ", r.shape().str());
    if (!r.grad_fn()) {  // a leaf root: its gradient is the seed
      Tensor leaf = r;
      Tensor g = leaf.grad();
      accumulate_into(g, grads[i]);
      leaf.set_grad(g);
      continue;
    }
    auto& slots = grad_slots[r.grad_fn().get()];
    slots.resize(r.grad_fn()->num_outputs);
    accumulate_into(slots[r.output_index()], grads[i]);
  }

  // `order` is post-order (children first); walk it backwards.
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = *it;
    std::vector<Tensor> slots = std::move(grad_slots[node]);
    grad_slots.erase(node);
    slots.resize(node->num_outputs);
    std::vector<Tensor> input_grads;
    {
      NvtxRange node_range(node->name().c_str());
      input_grads = node->backward(slots);
    }
    ENGINE_CHECK(input_grads.size() == node->inputs.size(), node->name(), " backward returned ",
                 input_grads.size(), " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < input_grads.size(); ++i) {
      const Edge& e = node->inputs[i];
      if (!input_grads[i].defined()) continue;
      if (e.node) {
        auto& target = grad_slots[e.node.get()];
        target.resize(e.node->num_outputs);
        accumulate_into(target[e.output_index], input_grads[i]);
      } else if (e.leaf) {
        MemoryOwnerScope owner("gradients");  // the memory report's owner (engine/allocator.h)
        accumulate_into(e.leaf->grad, input_grads[i]);
      }
    }
  }
}

void backward(const Tensor& loss) {
  ENGINE_CHECK(loss.numel() == 1, "backward(loss) needs a one-element loss, got ", loss.str());
  backward({loss}, {Tensor::full(loss.shape(), 1.0f, loss.dtype(), loss.device())});
}

namespace {
class CheckpointNode final : public Node {
 public:
  CheckpointNode(CheckpointFn fn, std::vector<Tensor> saved, std::vector<bool> wants_grad, bool offload)
      : fn_(std::move(fn)), wants_grad_(std::move(wants_grad)) {
    if (!offload) {
      saved_ = std::move(saved);
      return;
    }
    for (const Tensor& t : saved) offloaded_.push_back(std::make_unique<OffloadedTensor>(t));
  }
  std::string name() const override { return "checkpoint"; }

  // Starts bringing the offloaded inputs back (no-op when none or already started).
  void prefetch() {
    for (auto& t : offloaded_) t->prefetch();
  }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    ENGINE_CHECK(!backward_done_, "checkpoint: a second backward through the same graph (its saved inputs "
                 "are released by the first)");
    backward_done_ = true;
    if (!offloaded_.empty()) {
      prefetch();  // queued before the previous checkpoint's, so not behind it
      for (const Edge& e : inputs)
        if (auto* previous = dynamic_cast<CheckpointNode*>(e.node.get())) previous->prefetch();
      for (auto& t : offloaded_) saved_.push_back(t->take());
      offloaded_.clear();
    }
    // The saved inputs die when this returns, not with the graph: otherwise every layer's
    // input (the offloaded ones back on the device) would stay until the loss dies.
    const std::vector<Tensor> saved = std::move(saved_);
    saved_.clear();
    std::vector<Tensor> fresh;
    for (size_t i = 0; i < saved.size(); ++i) {
      Tensor t = saved[i].detach();
      t.set_requires_grad(wants_grad_[i]);
      fresh.push_back(t);
    }
    std::vector<Tensor> outputs;
    {
      NvtxRange range("recompute");
      GradModeGuard enable(true);
      outputs = fn_(fresh);
    }
    std::vector<Tensor> roots, seeds;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!grad_outputs[i].defined() || !outputs[i].requires_grad()) continue;
      roots.push_back(outputs[i]);
      seeds.push_back(grad_outputs[i]);
    }
    engine::backward(roots, seeds);
    std::vector<Tensor> input_grads;
    for (Tensor& t : fresh) input_grads.push_back(t.grad());
    return input_grads;
  }

 private:
  CheckpointFn fn_;
  std::vector<Tensor> saved_;
  std::vector<std::unique_ptr<OffloadedTensor>> offloaded_;  // instead of saved_ until backward
  std::vector<bool> wants_grad_;
  bool backward_done_ = false;
};
}  // namespace

GradModeGuard::GradModeGuard(bool enabled) : previous_(g_grad_enabled) { g_grad_enabled = enabled; }
GradModeGuard::~GradModeGuard() { g_grad_enabled = previous_; }

std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                               bool offload) {
  std::vector<Tensor> outputs;
  {
    NoGradGuard no_grad;
    outputs = fn(inputs);
  }
  // Recorded even when no input requires grad: fn may use parameters that do
  // (the first layer of a LoRA model gets a frozen embedding as input).
  if (!grad_enabled()) return outputs;
  std::vector<Tensor> saved;
  std::vector<bool> wants_grad;
  for (const Tensor& t : inputs) {
    saved.push_back(t.detach());
    set_memory_owner(t, "checkpoints");  // kept until backward (engine/allocator.h)
    wants_grad.push_back(t.requires_grad());
  }
  auto node = std::make_shared<CheckpointNode>(fn, std::move(saved), std::move(wants_grad), offload);
  record(node, inputs, outputs);
  return outputs;
}

}  // namespace engine
