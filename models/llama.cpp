#include "models/llama.h"

#include "engine/autograd.h"
#include "engine/nvtx.h"
#include "engine/ops.h"

namespace models {

using engine::Shape;
using engine::Tensor;
namespace ops = engine::ops;

LlamaModel::LlamaModel(const LlamaConfig& config, uint64_t seed) : config_(config) {
  config_.validate();
  engine::Generator gen(seed);
  auto weight = [&](int64_t out, int64_t in) { return engine::normal({out, in}, 0.0f, 0.02f, gen); };
  auto ones = [&](int64_t n) { return Tensor::full({n}, 1.0f); };
  const LlamaConfig& c = config_;
  embed_tokens_ = weight(c.vocab, c.hidden);
  for (int64_t i = 0; i < c.layers; ++i) {
    layers_.push_back({ones(c.hidden), ones(c.hidden), weight(c.q_dim(), c.hidden),
                       weight(c.kv_dim(), c.hidden), weight(c.kv_dim(), c.hidden),
                       weight(c.hidden, c.q_dim()), weight(c.intermediate, c.hidden),
                       weight(c.intermediate, c.hidden), weight(c.hidden, c.intermediate)});
  }
  final_norm_ = ones(c.hidden);
  lm_head_ = c.tie_embeddings ? embed_tokens_ : weight(c.vocab, c.hidden);
}

Tensor LlamaModel::layer_forward(const LlamaLayer& l, const Tensor& h) const {
  const LlamaConfig& c = config_;
  const int64_t batch = h.dim(0), seq = h.dim(1);
  Tensor n = ops::rms_norm(h, l.input_norm, c.rms_norm_eps);
  Tensor q = ops::reshape(ops::matmul(n, l.q_proj, false, true), {batch, seq, c.heads, c.head_dim});
  Tensor k = ops::reshape(ops::matmul(n, l.k_proj, false, true), {batch, seq, c.kv_heads, c.head_dim});
  Tensor v = ops::reshape(ops::matmul(n, l.v_proj, false, true), {batch, seq, c.kv_heads, c.head_dim});
  Tensor attn = ops::attention(ops::rope(q, c.rope), ops::rope(k, c.rope), v);
  attn = ops::reshape(attn, {batch, seq, c.q_dim()});
  Tensor h1 = ops::add(h, ops::matmul(attn, l.o_proj, false, true));
  Tensor m = ops::rms_norm(h1, l.post_attention_norm, c.rms_norm_eps);
  Tensor mlp = ops::swiglu(ops::matmul(m, l.gate_proj, false, true),
                           ops::matmul(m, l.up_proj, false, true));
  return ops::add(h1, ops::matmul(mlp, l.down_proj, false, true));
}

Tensor LlamaModel::hidden_states(const Tensor& ids, bool checkpoint_layers) const {
  ENGINE_CHECK(ids.rank() == 2, "model input ids must be [batch, seq], got ", ids.str());
  Tensor h = ops::embedding(ids, embed_tokens_);
  for (const LlamaLayer& layer : layers_) {
    engine::NvtxRange range("layer");
    if (checkpoint_layers) {
      auto fn = [this, &layer](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{layer_forward(layer, in[0])};
      };
      h = engine::checkpoint(fn, {h})[0];
    } else {
      h = layer_forward(layer, h);
    }
  }
  return ops::rms_norm(h, final_norm_, config_.rms_norm_eps);
}

Tensor LlamaModel::logits(const Tensor& ids) const {
  return ops::matmul(hidden_states(ids, false), lm_head_, false, true);
}

Tensor LlamaModel::loss(const Tensor& ids, const Tensor& labels, bool checkpoint_layers) const {
  ENGINE_CHECK(labels.shape() == ids.shape(), "labels ", labels.str(), " do not match ids ",
               ids.str());
  const int64_t batch = ids.dim(0), seq = ids.dim(1);
  Tensor h = hidden_states(ids, checkpoint_layers);
  Tensor logits = ops::matmul(ops::reshape(h, {batch * seq, config_.hidden}), lm_head_, false, true);
  // Position t predicts token t+1: targets are the labels shifted left, the last
  // position of each row gets -100.
  std::vector<int32_t> lab = labels.to_ints(), shifted(lab.size(), -100);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t + 1 < seq; ++t) shifted[b * seq + t] = lab[b * seq + t + 1];
  return ops::cross_entropy(logits, Tensor::from_ints(shifted, {batch * seq}));
}

std::vector<std::pair<std::string, Tensor>> LlamaModel::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out{{"model.embed_tokens.weight", embed_tokens_}};
  for (size_t i = 0; i < layers_.size(); ++i) {
    const LlamaLayer& l = layers_[i];
    std::string p = "model.layers." + std::to_string(i) + ".";
    out.insert(out.end(), {{p + "input_layernorm.weight", l.input_norm},
                           {p + "self_attn.q_proj.weight", l.q_proj},
                           {p + "self_attn.k_proj.weight", l.k_proj},
                           {p + "self_attn.v_proj.weight", l.v_proj},
                           {p + "self_attn.o_proj.weight", l.o_proj},
                           {p + "post_attention_layernorm.weight", l.post_attention_norm},
                           {p + "mlp.gate_proj.weight", l.gate_proj},
                           {p + "mlp.up_proj.weight", l.up_proj},
                           {p + "mlp.down_proj.weight", l.down_proj}});
  }
  out.push_back({"model.norm.weight", final_norm_});
  if (!config_.tie_embeddings) out.push_back({"lm_head.weight", lm_head_});
  return out;
}

std::vector<Tensor> LlamaModel::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

}  // namespace models
