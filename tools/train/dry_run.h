// train70b --dry-run (docs/memory.md, "Dry run"): the training run of the CUDA path on
// the dry CUDA runtime (engine/dry/dry_runtime.h), which executes nothing and hands out
// virtual device memory. `train70b --dry-run ...` re-executes itself as its sibling
// train70b-dry, the same trainer objects linked with that runtime, so that train70b
// itself keeps the real runtime and a dry run cannot reach a real GPU.
#pragma once
#include <vector>

#include "engine/gpu_spec.h"
#include "models/dataset.h"
#include "models/llama_config.h"
#include "tools/train/options.h"

namespace train {

// The name of the dry-run executable, beside train70b.
inline constexpr const char* kDryRunExecutable = "train70b-dry";

// Replaces the process with train70b-dry and the same arguments; returns only on failure
// (one line on stderr, the exit code). In a build without CUDA: says it needs the CUDA build.
int exec_dry_run(char** argv);

// The GPU of the dry run: --gpu, or a100-80gb.
engine::GpuSpec dry_run_gpu(const TrainOptions& options);

// Without --dataset, a dry run trains on `count` sequences of exactly --max-seq-len
// tokens, every position trained (the largest batches the flags allow); the values are
// of no consequence, nothing being computed.
std::vector<models::Example> dry_run_examples(const TrainOptions& options,
                                              const models::LlamaConfig& config, int64_t count);

}  // namespace train
