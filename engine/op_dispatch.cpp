#include <string>

#include "engine/autograd.h"
#include "engine/nvtx.h"
#include "engine/op.h"

namespace engine {

void OpContext::save(std::initializer_list<Tensor> tensors) {
  for (const Tensor& t : tensors) saved.push_back(t.defined() ? t.detach() : Tensor());
}

const OpDef& op_def(OpId id) {
  auto ops = all_ops();
  ENGINE_CHECK(static_cast<size_t>(id) < ops.size(), "unknown op id ", static_cast<int>(id));
  return ops[static_cast<size_t>(id)];
}

namespace {

class OpNode final : public Node {
 public:
  OpNode(const OpDef& def, const OpImpl& impl, std::shared_ptr<OpContext> ctx)
      : def_(def), impl_(impl), ctx_(std::move(ctx)) {}
  std::string name() const override { return std::string(def_.name) + "_backward"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    bool any = false;
    for (const Tensor& g : grad_outputs) any |= g.defined();
    std::vector<Tensor> grads;
    if (any) grads = impl_.backward(*ctx_, grad_outputs);
    grads.resize(ctx_->needs_grad.size());
    for (size_t i = 0; i < grads.size(); ++i)
      if (!ctx_->needs_grad[i]) grads[i] = Tensor();
    ctx_->saved.clear();  // free activations as soon as they are used
    return grads;
  }

 private:
  const OpDef& def_;
  const OpImpl& impl_;
  std::shared_ptr<OpContext> ctx_;
};

}  // namespace

std::vector<Tensor> call_op(OpId id, const std::vector<Tensor>& inputs, const OpAttrs& attrs) {
  const OpDef& def = op_def(id);
  const int n = static_cast<int>(inputs.size()), optional = optional_inputs(id);
  ENGINE_CHECK(n <= def.num_inputs && n >= def.num_inputs - optional, def.name, " takes ",
               def.num_inputs - optional, optional ? " or more" : "", " inputs, got ", n);
  Device device = inputs.at(0).device();
  for (const Tensor& t : inputs)
    ENGINE_CHECK(t.device() == device, def.name, ": inputs on ", device.str(), " and ",
                 t.device().str());
  const OpImpl& impl = device.is_cpu() ? def.cpu : def.cuda;
  ENGINE_CHECK(impl.exists(), def.name, " has no ", device.is_cpu() ? "cpu" : "cuda",
               " implementation");

  auto ctx = std::make_shared<OpContext>();
  ctx->attrs = attrs;
  bool record_node = should_record(inputs);
  for (const Tensor& t : inputs) {
    ctx->input_shapes.push_back(t.shape());
    ctx->needs_grad.push_back(record_node && t.requires_grad());
  }
  std::vector<Tensor> outputs;
  {
    NvtxRange range(def.name);
    NoGradGuard no_grad;  // ops composed of other ops must not record inner nodes
    outputs = impl.forward(*ctx, inputs);
  }
  ENGINE_CHECK(static_cast<int>(outputs.size()) == def.num_outputs, def.name, " returned ",
               outputs.size(), " outputs");
  if (record_node) {
    ENGINE_CHECK(impl.backward != nullptr, def.name, " is not differentiable on ", device.str());
    record(std::make_shared<OpNode>(def, impl, ctx), inputs, outputs);
  }
  return outputs;
}

}  // namespace engine
