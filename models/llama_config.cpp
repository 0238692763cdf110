#include "models/llama_config.h"

#include <utility>

#include "engine/error.h"

namespace models {

void LlamaConfig::validate() const {
  // A config comes from the user (a config.json or a preset name): input errors.
  ENGINE_INPUT_CHECK(hidden > 0 && layers > 0 && heads > 0 && kv_heads > 0 && head_dim > 0 &&
                         intermediate > 0 && vocab > 0,
                     "model config: every size must be positive");
  ENGINE_INPUT_CHECK(heads % kv_heads == 0, "model config: num_attention_heads (", heads,
                     ") is not a multiple of num_key_value_heads (", kv_heads, ")");
  ENGINE_INPUT_CHECK(head_dim % 2 == 0, "model config: head_dim ", head_dim,
                     " must be even for RoPE");
  const std::pair<const char*, int64_t> sizes[] = {
      {"hidden_size", hidden},       {"num_hidden_layers", layers},
      {"num_attention_heads", heads}, {"num_key_value_heads", kv_heads},
      {"head_dim", head_dim},        {"intermediate_size", intermediate},
      {"vocab_size", vocab}};
  for (const auto& [name, v] : sizes)
    ENGINE_INPUT_CHECK(v <= kMaxDim, "model config: ", name, " ", v, " is above the limit of ",
                       kMaxDim);
  // With every size <= 2^24 these products fit in int64; bounding them keeps later ones
  // (rows x columns, parameter_count) in range too.
  ENGINE_INPUT_CHECK(heads * head_dim <= kMaxDim, "model config: num_attention_heads x head_dim = ",
                     heads, " x ", head_dim, " = ", heads * head_dim, " is above the limit of ",
                     kMaxDim);
  ENGINE_INPUT_CHECK(max_position >= 0, "model config: max_position_embeddings ", max_position,
                     " is negative");
  // parameter_count in double (layers x per-layer can pass 2^63 with 2^24-bounded sizes;
  // a double is exact enough to compare with 2^48).
  const double h = static_cast<double>(hidden), q = static_cast<double>(heads * head_dim),
               kv = static_cast<double>(kv_heads * head_dim);
  const double per_layer = 2 * h * q + 2 * h * kv + 3 * h * static_cast<double>(intermediate) + 2 * h;
  const double params =
      2 * static_cast<double>(vocab) * h + static_cast<double>(layers) * per_layer + h;
  ENGINE_INPUT_CHECK(params <= static_cast<double>(kMaxParameters), "model config: about ",
                     params, " parameters, above the limit of ", kMaxParameters);
}

int64_t parameter_count(const LlamaConfig& c) {
  const int64_t embedding = c.vocab * c.hidden;
  const int64_t attention = c.hidden * c.q_dim() + 2 * c.hidden * c.kv_dim() + c.q_dim() * c.hidden;
  const int64_t mlp = 3 * c.hidden * c.intermediate;
  const int64_t layer = attention + mlp + 2 * c.hidden;
  return embedding + c.layers * layer + c.hidden + (c.tie_embeddings ? 0 : embedding);
}

LlamaConfig preset(const std::string& name) {
  LlamaConfig c;
  if (name == "tiny") {
    c.hidden = 64, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.head_dim = 16;
    c.intermediate = 128, c.vocab = 256 + 2;  // bytes + begin/end of text
    c.rope.theta = 10000.0f;
  } else if (name == "llama3-8b") {
    c.hidden = 4096, c.layers = 32, c.heads = 32, c.kv_heads = 8, c.head_dim = 128;
    c.intermediate = 14336, c.vocab = 128256;
    c.rope.theta = 500000.0f;
    c.max_position = 8192;  // Llama 3.0
  } else if (name == "llama3-70b") {
    c.hidden = 8192, c.layers = 80, c.heads = 64, c.kv_heads = 8, c.head_dim = 128;
    c.intermediate = 28672, c.vocab = 128256;
    c.rope.theta = 500000.0f;
    c.max_position = 8192;
  } else {
    throw engine::InputError("unknown model preset '" + name +
                             "' (known: tiny, llama3-8b, llama3-70b)");
  }
  c.validate();
  return c;
}

}  // namespace models
