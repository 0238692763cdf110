// The streaming quantizing loader: a Hugging Face Llama checkpoint (one model.safetensors
// or shards with model.safetensors.index.json; BF16, F16 or F32) becomes a frozen
// LlamaModel tensor by tensor, without a dense copy of the model anywhere:
//   - every tensor is pread into one reused host staging buffer (the size of the largest
//     tensor), then its pages are dropped from the page cache (posix_fadvise DONTNEED), so
//     cache pressure stays flat;
//   - decoder linears go to NF4 (or a dense frozen weight for BaseFormat::F32): on the CPU
//     with the CPU quantizer on all cores, converting from the checkpoint dtype chunk by
//     chunk; on CUDA the staging weight is uploaded, quantized by the NF4 kernel there and
//     freed;
//   - embedding, norms and lm_head in the run's dtype (f32 on the CPU, bf16 on a GPU).
// Peak host memory: the final host model + the largest tensor + a few MB of per-thread
// chunks. Peak device memory: the final model + one staging weight.
// A bitsandbytes 4-bit checkpoint (config.json quantization_config) loads its NF4 weights as
// stored (models/bnb_checkpoint.h), without re-quantizing.
//
// Every problem with the files is one engine::InputError line naming the file and tensor,
// raised before anything heavy where the header can tell (missing, wrong shape or dtype,
// unexpected tensors), or while streaming (truncated shard, non-finite value).
#pragma once
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "engine/quant/nf4.h"
#include "models/llama.h"

namespace models {

struct LoadOptions {
  engine::Device device = engine::Device::cpu();
  BaseFormat format = BaseFormat::NF4;
  std::ostream* log = nullptr;  // progress; nullptr: silent
  bool live_progress = false;   // one line rewritten in place (a terminal) vs a few plain lines
  int threads = 0;              // CPU quantizer threads; 0: every core
  // The embedding table stays in host memory (bf16) and never touches the device: it gets
  // no gradient, so a run on a GPU gathers its rows there (LlamaModel::embedding_on_host).
  bool embedding_on_host = false;
};

// The dtype of the dense weights (embedding, norms, lm_head) of a run on `device`.
engine::DType dense_dtype(engine::Device device);

// One weight the architecture needs, by Hugging Face name, in load order.
struct WeightSpec {
  std::string name;
  engine::Shape shape;
  bool linear = false;  // a decoder linear (frozen, NF4 or dense)
};
std::vector<WeightSpec> llama_weight_specs(const LlamaConfig& config);

// Puts the weight named `name` (a WeightSpec's) into its slot of `parts`: `frozen` for a
// decoder linear, `dense` for the embedding, the norms and lm_head.
void place_weight(LlamaModel::Parts& parts, const std::string& name, engine::Tensor dense,
                  std::shared_ptr<const engine::FrozenLinear> frozen);

// Loads `model_dir` (a directory with config.json and the safetensors) as a frozen model on
// options.device. `config` is the one read from model_dir/config.json.
std::unique_ptr<LlamaModel> load_llama(const LlamaConfig& config, const std::string& model_dir,
                                       const LoadOptions& options);

// NF4 (double-quantized) of a contiguous host array of `shape.numel()` BF16, F16 or F32
// values, on `threads` threads (0: every core); bitwise equal to engine::quant::quantize_nf4
// of the same values. A non-finite value throws InputError "<where>: ... non-finite ...".
engine::quant::Nf4Weight quantize_nf4_host(const void* data, engine::DType dtype,
                                           const engine::Shape& shape, int threads,
                                           const std::string& where);

// Peak resident memory of this process so far (VmHWM), in bytes; 0 where unknown.
size_t peak_rss_bytes();

}  // namespace models
