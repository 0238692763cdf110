// The Llama decoder on the engine's ops (Hugging Face layout and semantics):
//   h = embed(ids)
//   per layer:  n = rms_norm(h, input_layernorm)
//               h = h + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))
//               m = rms_norm(h, post_attention_layernorm)
//               h = h + down_proj(swiglu(gate_proj(m), up_proj(m)))
//   logits = lm_head(rms_norm(h, norm)); loss = cross_entropy(logits[t], labels[t+1])
// The seven linears of each layer are models::Linear: dense (full training), or a
// frozen f32/NF4 base with optional LoRA adapters (QLoRA). Each layer can run under
// gradient checkpointing, keeping only its input.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "models/linear.h"
#include "models/llama_config.h"
#include "models/lora.h"

namespace models {

struct LlamaLayer {
  engine::Tensor input_norm, post_attention_norm;  // [hidden]
  Linear q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
  // The linears in all_linear_names() order.
  std::vector<Linear*> linears();
  std::vector<const Linear*> linears() const;
};

struct ForwardOptions {
  bool checkpoint_layers = false;
  bool train = false;          // enables LoRA dropout
  uint64_t dropout_seed = 0;   // vary per step: masks are a function of it
  // Packed sequences (models/dataset.h PackedLayout): i32 [batch, seq] per-token positions,
  // restarting at 0 with each document, and each token's document start. Given, RoPE
  // uses the positions, attention never crosses a document boundary, and the loss drops
  // the target of each document's last token. Undefined: one sequence per row.
  engine::Tensor positions{}, doc_start{};
  // Memory (docs/memory.md, "Offloaded checkpoints and tiling"): the MLP runs in tiles of
  // this many tokens (engine/tiling.h; rounded up to a multiple of 4; 0: untiled), and each
  // checkpointed layer's saved input waits in pinned host memory (engine/offload.h).
  int64_t tile_tokens = 0;
  bool offload_checkpoints = false;
};

using NamedTensors = std::vector<std::pair<std::string, engine::Tensor>>;

class LlamaModel {
 public:
  // Random initialisation (embedding N(0, 1), linears N(0, 1/in), norms at 1), f32 CPU.
  LlamaModel(const LlamaConfig& config, uint64_t seed);
  // Weights by Hugging Face name (model.embed_tokens.weight, ...), f32 on the CPU.
  // Every weight of the architecture must be present with its exact shape and finite values.
  LlamaModel(const LlamaConfig& config, const NamedTensors& weights, const std::string& source);

  // Weights already in their final form, built without a dense model (the streaming
  // loader, models/weight_loader.h, and synthetic models): every linear frozen (NF4 or
  // dense), embedding, norms and lm_head in the run's dtype, all on one device, nothing
  // trainable. Shapes must match `config` (internal check: the builders validated them).
  struct Parts {
    engine::Tensor embed_tokens, final_norm, lm_head;  // lm_head = embed_tokens when tied
    std::vector<LlamaLayer> layers;
  };
  LlamaModel(const LlamaConfig& config, Parts parts);

  // Freezes every weight; the decoder linears move to `format` (NF4 or f32).
  void freeze_base(BaseFormat format);
  // True when every decoder linear is frozen (after freeze_base, or built from Parts).
  bool base_frozen() const;
  // Adds LoRA adapters to the targeted linears (after freeze_base).
  void add_lora(const LoraConfig& lora, uint64_t seed);
  // Moves the model to `device`: dense weights (embedding, norms, lm_head, unfrozen
  // linears) become `dtype` (bf16 activations on a GPU), frozen linears keep their
  // format, LoRA factors stay fp32 masters. Trainable tensors are replaced by their
  // copies: collect trainable_parameters() after moving.
  void to(engine::Device device, engine::DType dtype);
  engine::Device device() const { return final_norm_.device(); }
  // Moves the frozen embedding table to host memory (after `to`): its rows are gathered
  // there and only [tokens, hidden] goes to the device. Not for tied embeddings (the
  // lm_head needs the table on the device) nor a trainable one (no host gradient).
  void keep_embedding_on_host();
  bool embedding_on_host() const { return !(embed_tokens_.device() == device()); }

  // Mean next-token loss over positions whose shifted label is not -100.
  // ids, labels: i32 [batch, seq]; labels aligned with ids (HF convention).
  engine::Tensor loss(const engine::Tensor& ids, const engine::Tensor& labels,
                      const ForwardOptions& options = {}) const;
  // logits [batch, seq, vocab] (evaluation; dropout off, nothing checkpointed).
  engine::Tensor logits(const engine::Tensor& ids) const;
  // Per-sequence log-probabilities of the labels (DPO; models/llama_logprobs.cpp): f32
  // [batch], row b = sum (or mean, when `mean`) over the positions t whose shifted label
  // labels[b, t+1] is not -100 of log p(labels[b, t+1] | ids[b, 0..t]); fused with lm_head
  // (ops::lm_head_logprobs), so the [batch * seq, vocab] logits never exist.
  engine::Tensor sequence_logprobs(const engine::Tensor& ids, const engine::Tensor& labels,
                                   const ForwardOptions& options = {}, bool mean = false) const;
  // Held-out evaluation without logits (models/llama_eval.cpp; engine/lm_head_eval.h): per
  // position t of ids [batch, seq], with target labels[b, t+1] (the last position and
  // labels of -100 are ignored), loss f32 [batch * seq] = -log p(target) (0 where ignored)
  // and argmax i32 [batch * seq] = the greedy next token (first of ties; -1 where ignored),
  // on the model's device. Dropout off, nothing checkpointed; `options` may tile the MLP.
  std::pair<engine::Tensor, engine::Tensor> eval_stats(const engine::Tensor& ids,
                                                       const engine::Tensor& labels,
                                                       const ForwardOptions& options = {}) const;
  // Every LoRA adapter on (the default) or off; off, the adapted linears compute their
  // frozen base alone: the reference model of DPO. models/lora_scope.h holds the RAII switch.
  void set_lora_enabled(bool enabled);
  bool lora_enabled() const;

  NamedTensors named_parameters() const;        // the dense weights, HF names
  std::vector<engine::Tensor> trainable_parameters() const;
  // LoRA factors under PEFT names: base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight
  NamedTensors lora_parameters() const;
  // Frozen base bytes (decoder linears) and LoRA parameter count, for reports.
  size_t frozen_bytes() const;
  const LlamaConfig& config() const { return config_; }
  const std::vector<LlamaLayer>& layers() const { return layers_; }

 private:
  void init_layers_from(const NamedTensors& weights, const std::string& source);
  engine::Tensor hidden_states(const engine::Tensor& ids, const ForwardOptions& options) const;
  engine::Tensor layer_forward(size_t index, const engine::Tensor& h,
                               const ForwardOptions& options) const;

  LlamaConfig config_;
  engine::Tensor embed_tokens_, final_norm_, lm_head_;
  std::vector<LlamaLayer> layers_;
};

}  // namespace models
