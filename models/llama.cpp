#include "models/llama.h"

#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "engine/autograd.h"
#include "engine/nvtx.h"
#include "engine/ops.h"
#include "engine/tiling.h"

namespace models {

using engine::Tensor;
namespace ops = engine::ops;

std::vector<Linear*> LlamaLayer::linears() {
  return {&q_proj, &k_proj, &v_proj, &o_proj, &gate_proj, &up_proj, &down_proj};
}
std::vector<const Linear*> LlamaLayer::linears() const {
  return {&q_proj, &k_proj, &v_proj, &o_proj, &gate_proj, &up_proj, &down_proj};
}

namespace {
// The frozen embedding's rows for `ids`, gathered on the host (the table is there): a
// byte copy per token, the same values ops::embedding would give on the device.
Tensor gather_rows_on_host(const Tensor& table, const Tensor& ids) {
  ENGINE_CHECK(table.device().is_cpu() && table.rank() == 2, "host embedding table ", table.str());
  const std::vector<int32_t> index = ids.to_ints();
  const int64_t vocab = table.dim(0);
  const size_t row = engine::dtype_bytes(table.dtype(), table.dim(1));
  Tensor out = Tensor::empty({static_cast<int64_t>(index.size()), table.dim(1)}, table.dtype());
  auto* dst = static_cast<char*>(out.raw_data());
  const auto* src = static_cast<const char*>(table.raw_data());
  for (size_t t = 0; t < index.size(); ++t) {
    ENGINE_CHECK(index[t] >= 0 && index[t] < vocab, "embedding: token id ", index[t], " at position ",
                 t, " is outside [0, ", vocab, ")");
    std::memcpy(dst + t * row, src + index[t] * row, row);
  }
  return out;
}

std::string layer_prefix(size_t i) { return "model.layers." + std::to_string(i) + "."; }
std::string linear_path(size_t index) {  // "self_attn.q_proj" / "mlp.gate_proj"
  const std::string& name = all_linear_names()[index];
  return (index < 4 ? "self_attn." : "mlp.") + name;
}
}  // namespace

LlamaModel::LlamaModel(const LlamaConfig& config, uint64_t seed) : config_(config) {
  config_.validate();
  engine::Generator gen(seed);
  // LeCun-normal linears (std 1/sqrt(in)) keep activations and logits at unit scale,
  // so a random base is a usable starting point for LoRA in tests and the demo.
  auto weight = [&](int64_t out, int64_t in) {
    return engine::normal({out, in}, 0.0f, 1.0f / std::sqrt(static_cast<float>(in)), gen);
  };
  auto ones = [&](int64_t n) { return Tensor::full({n}, 1.0f); };
  const LlamaConfig& c = config_;
  embed_tokens_ = engine::normal({c.vocab, c.hidden}, 0.0f, 1.0f, gen);
  for (int64_t i = 0; i < c.layers; ++i) {
    LlamaLayer l;
    l.input_norm = ones(c.hidden);
    l.post_attention_norm = ones(c.hidden);
    l.q_proj.weight = weight(c.q_dim(), c.hidden);
    l.k_proj.weight = weight(c.kv_dim(), c.hidden);
    l.v_proj.weight = weight(c.kv_dim(), c.hidden);
    l.o_proj.weight = weight(c.hidden, c.q_dim());
    l.gate_proj.weight = weight(c.intermediate, c.hidden);
    l.up_proj.weight = weight(c.intermediate, c.hidden);
    l.down_proj.weight = weight(c.hidden, c.intermediate);
    layers_.push_back(std::move(l));
  }
  final_norm_ = ones(c.hidden);
  lm_head_ = c.tie_embeddings ? embed_tokens_ : weight(c.vocab, c.hidden);
}

LlamaModel::LlamaModel(const LlamaConfig& config, const NamedTensors& weights,
                       const std::string& source)
    : config_(config) {
  config_.validate();
  init_layers_from(weights, source);
}

void LlamaModel::init_layers_from(const NamedTensors& weights, const std::string& source) {
  std::map<std::string, Tensor> by_name(weights.begin(), weights.end());
  auto take = [&](const std::string& name, engine::Shape shape) {
    auto it = by_name.find(name);
    ENGINE_INPUT_CHECK(it != by_name.end(), source, ": missing weight '", name, "'");
    ENGINE_INPUT_CHECK(it->second.shape() == shape, source, ": weight '", name, "' has shape ",
                       it->second.shape().str(), ", expected ", shape.str());
    Tensor t = it->second.dtype() == engine::DType::F32 ? it->second
                                                         : it->second.to_dtype(engine::DType::F32);
    // A non-finite base weight trains to an all-NaN adapter (an Inf norm weight makes every
    // loss NaN) and NF4 quantization would hide a NaN in a code: refuse it here.
    if (t.device().is_cpu()) {
      const float* v = t.data<float>();
      for (int64_t i = 0; i < t.numel(); ++i)
        ENGINE_INPUT_CHECK(std::isfinite(v[i]), source, ": weight '", name, "' holds a non-finite value (",
                           v[i], " at flat index ", i, ")");
    }
    by_name.erase(it);
    return t;
  };
  const LlamaConfig& c = config_;
  embed_tokens_ = take("model.embed_tokens.weight", {c.vocab, c.hidden});
  layers_.clear();
  for (int64_t i = 0; i < c.layers; ++i) {
    const std::string p = layer_prefix(i);
    LlamaLayer l;
    l.input_norm = take(p + "input_layernorm.weight", {c.hidden});
    l.post_attention_norm = take(p + "post_attention_layernorm.weight", {c.hidden});
    const engine::Shape shapes[7] = {{c.q_dim(), c.hidden},       {c.kv_dim(), c.hidden},
                                     {c.kv_dim(), c.hidden},      {c.hidden, c.q_dim()},
                                     {c.intermediate, c.hidden}, {c.intermediate, c.hidden},
                                     {c.hidden, c.intermediate}};
    auto lin = l.linears();
    for (size_t j = 0; j < lin.size(); ++j) lin[j]->weight = take(p + linear_path(j) + ".weight", shapes[j]);
    layers_.push_back(std::move(l));
  }
  final_norm_ = take("model.norm.weight", {c.hidden});
  lm_head_ = c.tie_embeddings ? embed_tokens_ : take("lm_head.weight", {c.vocab, c.hidden});
  by_name.erase("lm_head.weight");  // tied checkpoints sometimes carry a copy
  ENGINE_INPUT_CHECK(by_name.empty(), source, ": unexpected weight '", by_name.begin()->first,
                     "'");
}

LlamaModel::LlamaModel(const LlamaConfig& config, Parts parts) : config_(config) {
  config_.validate();
  const LlamaConfig& c = config_;
  ENGINE_CHECK(static_cast<int64_t>(parts.layers.size()) == c.layers, "model parts: ",
               parts.layers.size(), " layers, config has ", c.layers);
  ENGINE_CHECK(parts.embed_tokens.shape() == engine::Shape({c.vocab, c.hidden}) &&
                   parts.lm_head.shape() == engine::Shape({c.vocab, c.hidden}) &&
                   parts.final_norm.shape() == engine::Shape({c.hidden}),
               "model parts do not match the config");
  const engine::Device device = parts.final_norm.device();  // the embedding may stay on the host
  for (const LlamaLayer& l : parts.layers) {
    ENGINE_CHECK(l.input_norm.shape() == engine::Shape({c.hidden}) &&
                     l.post_attention_norm.shape() == engine::Shape({c.hidden}),
                 "model parts: norm shape");
    for (const Linear* lin : l.linears())
      ENGINE_CHECK(lin->frozen && lin->frozen->device() == device, "model parts: every linear must be frozen on ",
                   device.str());
  }
  embed_tokens_ = std::move(parts.embed_tokens);
  final_norm_ = std::move(parts.final_norm);
  lm_head_ = c.tie_embeddings ? embed_tokens_ : std::move(parts.lm_head);
  layers_ = std::move(parts.layers);
}

bool LlamaModel::base_frozen() const {
  for (const LlamaLayer& l : layers_)
    for (const Linear* lin : l.linears())
      if (!lin->frozen) return false;
  return true;
}

void LlamaModel::freeze_base(BaseFormat format) {
  for (LlamaLayer& l : layers_)
    for (Linear* lin : l.linears()) lin->freeze(format);
  for (auto& [name, t] : named_parameters()) Tensor(t).set_requires_grad(false);
}

void LlamaModel::add_lora(const LoraConfig& lora, uint64_t seed) {
  lora.validate();
  engine::Generator gen(seed);
  for (LlamaLayer& l : layers_) {
    auto lin = l.linears();
    for (size_t j = 0; j < lin.size(); ++j)
      for (const std::string& t : lora.targets)
        if (t == all_linear_names()[j]) lin[j]->add_lora(lora.r, lora.scaling(), lora.dropout, gen);
  }
}

void LlamaModel::to(engine::Device device, engine::DType dtype) {
  auto move = [&](Tensor& t, engine::DType type) {
    if (!t.defined()) return;
    const bool trains = t.requires_grad();
    Tensor moved = t.dtype() == type ? t : t.to_dtype(type);
    if (moved.device() != device) moved = moved.to(device);
    t = moved.detach().set_requires_grad(trains);
  };
  const bool tied = lm_head_.same_impl(embed_tokens_);
  if (embedding_on_host() && !device.is_cpu()) {  // it stays there (keep_embedding_on_host)
    if (embed_tokens_.dtype() != dtype) embed_tokens_ = embed_tokens_.to_dtype(dtype);
  } else {
    move(embed_tokens_, dtype);
  }
  move(final_norm_, dtype);
  if (tied) lm_head_ = embed_tokens_;
  else move(lm_head_, dtype);
  for (LlamaLayer& l : layers_) {
    move(l.input_norm, dtype);
    move(l.post_attention_norm, dtype);
    for (Linear* lin : l.linears()) {
      move(lin->weight, dtype);
      if (lin->frozen && lin->frozen->device() != device) lin->frozen = lin->frozen->to(device);
      move(lin->lora_a, engine::DType::F32);
      move(lin->lora_b, engine::DType::F32);
    }
  }
}

void LlamaModel::keep_embedding_on_host() {
  ENGINE_CHECK(!config_.tie_embeddings, "the embedding cannot stay on the host: the lm_head shares it");
  ENGINE_CHECK(!embed_tokens_.requires_grad(), "a trainable embedding cannot stay on the host");
  if (!embed_tokens_.device().is_cpu()) embed_tokens_ = embed_tokens_.to(engine::Device::cpu());
}

Tensor LlamaModel::layer_forward(size_t index, const Tensor& h, const ForwardOptions& o) const {
  const LlamaConfig& c = config_;
  const LlamaLayer& l = layers_[index];
  const int64_t batch = h.dim(0), seq = h.dim(1);
  // Here rather than around the call, so a checkpointed layer's recompute shows it too.
  const std::string range_name = "layer " + std::to_string(index);
  engine::NvtxRange range(range_name.c_str());
  // Each linear of each layer draws its dropout mask from its own Philox key.
  auto seed = [&](int j) { return o.dropout_seed * 1000003ull + index * 8 + j; };
  Tensor n = ops::rms_norm(h, l.input_norm, c.rms_norm_eps);
  Tensor q = ops::reshape(l.q_proj.forward(n, o.train, seed(0)), {batch, seq, c.heads, c.head_dim});
  Tensor k = ops::reshape(l.k_proj.forward(n, o.train, seed(1)), {batch, seq, c.kv_heads, c.head_dim});
  Tensor v = ops::reshape(l.v_proj.forward(n, o.train, seed(2)), {batch, seq, c.kv_heads, c.head_dim});
  Tensor attn = ops::attention(ops::rope(q, c.rope, 0, o.positions),
                               ops::rope(k, c.rope, 0, o.positions), v, 0.0f, o.doc_start);
  attn = ops::reshape(attn, {batch, seq, c.q_dim()});
  Tensor h1 = ops::add(h, l.o_proj.forward(attn, o.train, seed(3)));
  Tensor m = ops::rms_norm(h1, l.post_attention_norm, c.rms_norm_eps);
  // The MLP is row-wise: in token tiles its [tokens, intermediate] activations exist for
  // one tile at a time (engine/tiling.h); first_row keeps the dropout masks the untiled ones.
  // Captured by value: the tiling node keeps it until backward.
  auto mlp = [layer = &l, train = o.train, s4 = seed(4), s5 = seed(5), s6 = seed(6)](
                 const Tensor& x, int64_t first_row) {
    Tensor act = ops::swiglu(layer->gate_proj.forward(x, train, s4, first_row),
                             layer->up_proj.forward(x, train, s5, first_row));
    return layer->down_proj.forward(act, train, s6, first_row);
  };
  const int64_t tile = (o.tile_tokens + 3) / 4 * 4;  // whole Philox blocks per tile
  return ops::add(h1, engine::tiled_rows(mlp, m, tile));
}

Tensor LlamaModel::hidden_states(const Tensor& ids, const ForwardOptions& options) const {
  ENGINE_CHECK(ids.rank() == 2, "model input ids must be [batch, seq], got ", ids.str());
  ENGINE_CHECK(options.positions.defined() == options.doc_start.defined(),
               "packed batches need both positions and doc_start");
  ForwardOptions o = options;  // the packed layout on the model's device, once per pass
  for (Tensor* t : {&o.positions, &o.doc_start}) {
    if (!t->defined()) continue;
    ENGINE_CHECK(t->shape() == ids.shape(), "packed layout ", t->str(), " does not match ids ",
                 ids.str());
    if (!(t->device() == device())) *t = t->to(device());
  }
  Tensor h = embedding_on_host()
                 ? gather_rows_on_host(embed_tokens_, ids).to(device()).view(
                       {ids.dim(0), ids.dim(1), config_.hidden})
                 : ops::embedding(ids.device() == device() ? ids : ids.to(device()), embed_tokens_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (o.checkpoint_layers) {
      auto fn = [this, i, o](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{layer_forward(i, in[0], o)};
      };
      h = engine::checkpoint(fn, {h}, o.offload_checkpoints)[0];
    } else {
      h = layer_forward(i, h, o);
    }
  }
  return ops::rms_norm(h, final_norm_, config_.rms_norm_eps);
}

Tensor LlamaModel::logits(const Tensor& ids) const {
  return ops::matmul(hidden_states(ids, {}), lm_head_, false, true);
}

Tensor LlamaModel::loss(const Tensor& ids, const Tensor& labels, const ForwardOptions& o) const {
  ENGINE_CHECK(labels.shape() == ids.shape(), "labels ", labels.str(), " do not match ids ",
               ids.str());
  const int64_t batch = ids.dim(0), seq = ids.dim(1);
  Tensor h = hidden_states(ids, o);
  // Position t predicts token t+1: targets are the labels shifted left, the last
  // position of each row gets -100.
  // Packed rows: a document's last token predicts nothing (the next token starts
  // another document), so its target is -100 too.
  std::vector<int32_t> lab = labels.to_ints(), shifted(lab.size(), -100);
  const std::vector<int32_t> pos =
      o.positions.defined() ? o.positions.to_ints() : std::vector<int32_t>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t + 1 < seq; ++t)
      if (pos.empty() || pos[b * seq + t + 1] != 0) shifted[b * seq + t] = lab[b * seq + t + 1];
  // lm_head and cross-entropy fused: the [batch * seq, vocab] logits never exist.
  Tensor targets = Tensor::from_ints(shifted, {batch * seq});
  if (!h.device().is_cpu()) targets = targets.to(h.device());
  return ops::lm_head_cross_entropy(ops::reshape(h, {batch * seq, config_.hidden}), lm_head_,
                                    targets);
}

NamedTensors LlamaModel::named_parameters() const {
  NamedTensors out{{"model.embed_tokens.weight", embed_tokens_}};
  for (size_t i = 0; i < layers_.size(); ++i) {
    const LlamaLayer& l = layers_[i];
    const std::string p = layer_prefix(i);
    out.push_back({p + "input_layernorm.weight", l.input_norm});
    out.push_back({p + "post_attention_layernorm.weight", l.post_attention_norm});
    auto lin = l.linears();
    for (size_t j = 0; j < lin.size(); ++j)
      if (lin[j]->weight.defined()) out.push_back({p + linear_path(j) + ".weight", lin[j]->weight});
  }
  out.push_back({"model.norm.weight", final_norm_});
  if (!config_.tie_embeddings) out.push_back({"lm_head.weight", lm_head_});
  return out;
}

NamedTensors LlamaModel::lora_parameters() const {
  NamedTensors out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto lin = layers_[i].linears();
    for (size_t j = 0; j < lin.size(); ++j) {
      if (!lin[j]->adapted()) continue;
      const std::string p = "base_model.model." + layer_prefix(i) + linear_path(j);
      out.push_back({p + ".lora_A.weight", lin[j]->lora_a});
      out.push_back({p + ".lora_B.weight", lin[j]->lora_b});
    }
  }
  return out;
}

std::vector<Tensor> LlamaModel::trainable_parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters())
    if (t.requires_grad()) out.push_back(t);
  for (auto& [name, t] : lora_parameters()) out.push_back(t);
  return out;
}

size_t LlamaModel::frozen_bytes() const {
  size_t total = 0;
  for (const LlamaLayer& l : layers_)
    for (const Linear* lin : l.linears())
      if (lin->frozen) total += lin->frozen->nbytes();
  return total;
}

}  // namespace models
