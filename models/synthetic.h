// Synthetic models: `--model synthetic:llama3-70b` (any preset) gives a frozen NF4 model with
// random weights generated on the run's device from a seed: no checkpoint, no disk, no host
// copy on a GPU. The way to measure the speed and memory of a 70B step without 40 GB of
// weights. Each linear is drawn N(0, 1/in) as one dense staging weight on the device (the
// RNG kernels on CUDA, the same Philox stream on the CPU) and quantized there by the NF4
// quantizer, so peak device memory is the final model plus one staging weight. Embedding
// N(0, 1), norms 1, lm_head N(0, 1/hidden), in the run's dtype.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "models/llama.h"

namespace models {

constexpr const char* kSyntheticPrefix = "synthetic:";

// The preset name of "synthetic:<preset>", or "" when `model` is not synthetic.
std::string synthetic_preset(const std::string& model);

// What a synthetic (or any NF4-base) model occupies on its device, from the config alone:
// no allocation, so the 70B figures can be checked anywhere.
struct ModelBytes {
  int64_t nf4 = 0;            // decoder linears: packed + absmax codes + nested + offset
  int64_t dense = 0;          // embedding, norms, lm_head (untied) in the dense dtype
  int64_t largest_linear = 0; // elements of the largest linear (the staging weight)
  int64_t total() const { return nf4 + dense; }
};
ModelBytes nf4_model_bytes(const LlamaConfig& config, engine::DType dense_dtype);

// The model, frozen, on `device` (dense weights f32 on the CPU, bf16 on CUDA); with
// embedding_on_host the embedding is drawn in host memory instead (LoadOptions).
std::unique_ptr<LlamaModel> synthetic_llama(const LlamaConfig& config, uint64_t seed,
                                            engine::Device device, int threads = 0,
                                            bool embedding_on_host = false);

}  // namespace models
