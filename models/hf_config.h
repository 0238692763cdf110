// Reads a Hugging Face config.json into a LlamaConfig. Accepted: the Llama 2, 3, 3.1,
// 3.2 and 3.3 files (model_type "llama", architectures ["LlamaForCausalLM"]).
//
//   hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size,
//   rms_norm_eps                                    required
//   num_key_value_heads   default num_attention_heads (as transformers does)
//   head_dim              default hidden_size / num_attention_heads
//   rope_theta            default 10000
//   rope_scaling          null, or rope_type (old spelling: type) "default" or "llama3" with
//                         factor, low_freq_factor, high_freq_factor,
//                         original_max_position_embeddings; linear, dynamic, yarn, ... rejected
//   rope_parameters       the newer spelling of rope_scaling, which also holds rope_theta
//   tie_word_embeddings   default false
//   torch_dtype / dtype   recorded as written
//   max_position_embeddings  optional; train70b warns about longer sequences
//   attention_bias, mlp_bias must be false and hidden_act "silu" when present.
// Other keys are ignored. A null value counts as absent; a duplicate key is an error (JSON
// parsers disagree on which value wins), and so is a size above LlamaConfig::kMaxDim.
// Every error is one engine::InputError
// line starting with the path: `<path>: missing field "vocab_size"`.
#pragma once
#include <string>

#include "models/llama_config.h"

namespace models {

LlamaConfig load_hf_config(const std::string& path_to_config_json);

// Copies the files that travel with a model's weights (tokenizer, chat template, generation
// defaults: tokenizer.json, tokenizer_config.json, tokenizer.model, generation_config.json,
// ...) that exist in `from` into `to` (train70b merge and quantize write new model
// directories with them).
void copy_model_side_files(const std::string& from, const std::string& to);

}  // namespace models
