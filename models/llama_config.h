// Llama architecture hyper-parameters (Hugging Face config.json names in comments)
// and the built-in presets.
#pragma once
#include <cstdint>
#include <string>

#include "engine/op.h"

namespace models {

struct LlamaConfig {
  int64_t hidden = 0;          // hidden_size
  int64_t layers = 0;          // num_hidden_layers
  int64_t heads = 0;           // num_attention_heads
  int64_t kv_heads = 0;        // num_key_value_heads
  int64_t head_dim = 0;        // head_dim (hidden / heads when absent)
  int64_t intermediate = 0;    // intermediate_size
  int64_t vocab = 0;           // vocab_size
  float rms_norm_eps = 1e-5f;  // rms_norm_eps
  engine::RopeConfig rope;     // rope_theta, rope_scaling
  bool tie_embeddings = false; // tie_word_embeddings
  std::string torch_dtype;     // torch_dtype or dtype, as written ("bfloat16"); empty if absent
  int64_t max_position = 0;    // max_position_embeddings; 0 when unknown

  // Largest accepted size of any one dimension and of any weight row or column product
  // (heads x head_dim, ...): far above any Llama, and small enough that every size product
  // the model computes fits in int64 (parameter_count is checked on its own).
  static constexpr int64_t kMaxDim = int64_t{1} << 24;
  static constexpr int64_t kMaxParameters = int64_t{1} << 48;

  // Throws engine::InputError naming the first inconsistent or out-of-range field (HF names),
  // so that q_dim(), kv_dim() and parameter_count() cannot overflow afterwards.
  void validate() const;
  int64_t q_dim() const { return heads * head_dim; }
  int64_t kv_dim() const { return kv_heads * head_dim; }
};

// Number of weights: embedding, per layer the 7 linears and 2 norms, the final norm, and
// lm_head unless tied to the embedding (Llama-3-8B: 8,030,261,248).
int64_t parameter_count(const LlamaConfig& config);

// "tiny" (tests and the demo), "llama3-8b", "llama3-70b".
LlamaConfig preset(const std::string& name);

}  // namespace models
