// Pre-quantized bitsandbytes 4-bit checkpoints (the "-bnb-4bit" repositories): reading
// their NF4 weights as stored, and writing them (train70b quantize). Tensor names and the
// quant_state JSON follow ../shared/facts.md ("Serialized form"); the quantization_config
// keys follow transformers' BitsAndBytesConfig.
//
// Status: interface fixed first so that the streaming loader (models/weight_loader) and this
// reader could be written at the same time; see models/bnb_checkpoint.cpp.
#pragma once
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "engine/io/safetensors.h"
#include "engine/quant/nf4.h"

namespace models {

// config.json's quantization_config, when it asks for bitsandbytes 4-bit NF4.
struct BnbQuantization {
  bool double_quant = true;            // bnb_4bit_use_double_quant
  std::string compute_dtype = "bfloat16";  // bnb_4bit_compute_dtype, as written
  int64_t blocksize = 64;              // from the quant_state; only 64 is accepted
};

// Reads quantization_config from config.json. nullopt when there is none (a dense
// checkpoint). One engine::InputError line naming the file and key for what the engine
// cannot load as stored: another quant_method, load_in_8bit, bnb_4bit_quant_type "fp4".
std::optional<BnbQuantization> read_bnb_quantization(const std::string& config_json_path);

// The NF4 weight `name` (e.g. "model.layers.0.mlp.up_proj.weight") of a bnb-4bit
// checkpoint, exactly as stored: packed nibbles, absmax codes, nested absmax, offset. A
// nested_quant_map that differs from the engine's dynamic map is honoured by dequantizing
// the absmax with it and keeping the result as fp32 absmax (double_quant = false), so the
// weights stay bit-exact. One InputError line naming index.path() and the tensor for a
// missing .absmax / .quant_state.* entry, a quant_state shape that is not `expected`,
// another blocksize or quant type, a map of the wrong length.
engine::quant::Nf4Weight read_bnb_nf4(const engine::io::SafetensorsIndex& index,
                                      const std::string& name, const engine::Shape& expected);

// The tensors bitsandbytes stores for one NF4 weight, in its names (P, P.absmax,
// P.quant_map, P.nested_absmax, P.nested_quant_map, P.quant_state.bitsandbytes__nf4),
// ready for engine::io::write_safetensors. `compute_dtype` goes into the quant_state.
std::vector<std::pair<std::string, engine::Tensor>> bnb_nf4_tensors(
    const std::string& name, const engine::quant::Nf4Weight& w,
    const std::string& compute_dtype = "bfloat16");

// ---- train70b quantize

// "--max-shard-size": 5GB, 500MB (powers of 10, as transformers), 2GiB, or bytes; 1MB..1000TB.
uint64_t parse_shard_size(const std::string& text);

struct QuantizeOptions {
  uint64_t max_shard_bytes = 5'000'000'000;
  int threads = 0;               // CPU quantizer threads; 0: every core
  std::ostream* log = nullptr;   // one line per shard written
};

// Writes the dense Llama checkpoint `model_dir` (config.json, safetensors in BF16/F16/F32)
// as a bitsandbytes 4-bit checkpoint: decoder linears double-quantized NF4 (bitwise what the
// engine's loader makes of the dense model), everything else copied as stored; config.json
// gains transformers' quantization_config; shards of at most max_shard_bytes (one
// model.safetensors when it fits, else model-0000i-of-0000N.safetensors plus
// model.safetensors.index.json); tokenizer, chat template and generation files copied. All of
// it is written into a temporary sibling directory that is renamed to `output_dir` at the
// end, so `output_dir` (absent or empty) is either untouched or complete. One InputError
// line for any problem with the input, before the output exists.
void write_bnb_checkpoint(const std::string& model_dir, const std::string& output_dir,
                          const QuantizeOptions& options);

}  // namespace models
