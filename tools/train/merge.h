// `train70b merge`: a base Llama checkpoint plus a PEFT LoRA adapter become one plain
// model directory (bf16 safetensors, config.json, tokenizer and generation files) that
// transformers loads as LlamaForCausalLM and train70b loads as a base model.
//
// Math, per adapted linear (PEFT's merge_and_unload, fan_in_fan_out false):
//   W' = bf16( W + s * (B A) ),  B [out, r], A [r, in], all in fp32, rounded to bf16 once;
//   s = lora_alpha / r (use_rslora: lora_alpha / sqrt(r)), computed in double, used as fp32.
// W is the base weight as stored (BF16/F16/F32), or for a bitsandbytes 4-bit base the
// bitsandbytes dequantization of its NF4 weight; `--base-as nf4` merges into the weight a
// QLoRA run trained against instead: the engine's NF4 quantization of W, dequantized.
// Every other tensor is converted to bf16 as it is.
//
// Streaming: tensor by tensor (one base tensor, its fp32 copy and one adapter pair in memory
// at a time); each shard's header is written first, then its tensors' bytes. The output is
// built in a temporary sibling directory that is renamed into place at the end, so the
// output directory (absent or empty) is either untouched or complete.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>

namespace train {

struct MergeOptions {
  std::string model_dir;    // Hugging Face Llama directory (dense or bnb-4bit)
  std::string adapter_dir;  // adapter_config.json + adapter_model.safetensors
  std::string output_dir;   // absent or empty
  uint64_t max_shard_bytes = 5'000'000'000;
  bool base_as_nf4 = false;  // merge into dequantize(quantize_nf4(W)) (dense bases only)
  int threads = 0;           // 0: every core
  std::ostream* log = nullptr;
};

// Writes the merged model. One engine::InputError line naming the file (and tensor or
// field) for any problem with the inputs, raised before the output exists where the
// headers can tell; nothing is left behind on any error.
void merge_adapter(const MergeOptions& options);

// The subcommand: argv[0] is "merge"; returns the exit status; errors are one line.
int merge_main(int argc, char** argv);

}  // namespace train
