// The Llama decoder on the engine's ops (Hugging Face layout and semantics):
//   h = embed(ids)
//   per layer:  h = h + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),
//               n = rms_norm(h, input_layernorm)
//               h = h + down(swiglu(gate(m), up(m))),  m = rms_norm(h, post_attention_layernorm)
//   logits = lm_head(rms_norm(h, norm)); loss = cross_entropy(logits[t], labels[t+1])
// Each layer can run under gradient checkpointing (only its input is kept).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "engine/rng.h"
#include "models/llama_config.h"

namespace models {

struct LlamaLayer {
  engine::Tensor input_norm, post_attention_norm;       // [hidden]
  engine::Tensor q_proj, k_proj, v_proj, o_proj;        // [out, in], HF layout
  engine::Tensor gate_proj, up_proj, down_proj;
};

class LlamaModel {
 public:
  // Random initialisation (normal, std 0.02; norms at 1), fp32 on the CPU.
  LlamaModel(const LlamaConfig& config, uint64_t seed);

  // Mean next-token loss over positions whose shifted label is not -100.
  // ids, labels: i32 [batch, seq]; labels aligned with ids (HF convention).
  engine::Tensor loss(const engine::Tensor& ids, const engine::Tensor& labels,
                      bool checkpoint_layers = false) const;
  // logits [batch, seq, vocab] for inspection and evaluation.
  engine::Tensor logits(const engine::Tensor& ids) const;

  // Every weight with its Hugging Face name.
  std::vector<std::pair<std::string, engine::Tensor>> named_parameters() const;
  std::vector<engine::Tensor> parameters() const;
  const LlamaConfig& config() const { return config_; }

 private:
  engine::Tensor hidden_states(const engine::Tensor& ids, bool checkpoint_layers) const;
  engine::Tensor layer_forward(const LlamaLayer& layer, const engine::Tensor& h) const;

  LlamaConfig config_;
  engine::Tensor embed_tokens_, final_norm_, lm_head_;
  std::vector<LlamaLayer> layers_;
};

}  // namespace models
