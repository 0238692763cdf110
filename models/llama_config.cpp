#include "models/llama_config.h"

#include "engine/error.h"

namespace models {

void LlamaConfig::validate() const {
  ENGINE_CHECK(hidden > 0 && layers > 0 && heads > 0 && kv_heads > 0 && head_dim > 0 &&
                   intermediate > 0 && vocab > 0,
               "model config: every size must be positive");
  ENGINE_CHECK(heads % kv_heads == 0, "model config: num_attention_heads (", heads,
               ") is not a multiple of num_key_value_heads (", kv_heads, ")");
  ENGINE_CHECK(head_dim % 2 == 0, "model config: head_dim ", head_dim, " must be even for RoPE");
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
  } else if (name == "llama3-70b") {
    c.hidden = 8192, c.layers = 80, c.heads = 64, c.kv_heads = 8, c.head_dim = 128;
    c.intermediate = 28672, c.vocab = 128256;
    c.rope.theta = 500000.0f;
  } else {
    ENGINE_CHECK(false, "unknown preset '", name, "' (known: tiny, llama3-8b, llama3-70b)");
  }
  c.validate();
  return c;
}

}  // namespace models
