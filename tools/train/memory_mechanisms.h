// The memory mechanisms of a run (docs/memory.md, "Offloaded checkpoints, tiling and the
// host embedding"), from the flags --offload-checkpoints, --tile-tokens and
// --embedding-on-host, with `auto` resolved by a simple rule until the memory planner
// (tools/train/memory_plan.h) chooses:
//   offload    auto: off
//   tile       auto (0): the largest power of two N with N x intermediate x 2 bytes (one
//              bf16 MLP activation) <= 256 MiB; untiled when the micro-batch has <= N
//              tokens (Llama-3-70B: 4,096; 8B: 8,192)
//   embedding  auto: off
// On the CPU device offloading and the host embedding change nothing (they are no-ops).
#pragma once
#include <cstdint>

#include "models/llama.h"
#include "tools/train/options.h"

namespace train {

struct MemoryMechanisms {
  bool offload_checkpoints = false;
  int64_t tile_tokens = 0;  // 0: untiled
  bool embedding_on_host = false;
};

inline constexpr int64_t kAutoTileBytes = int64_t(256) << 20;

// Throws engine::InputError naming the flag when an explicit choice cannot apply
// (--embedding-on-host on with tied embeddings).
MemoryMechanisms resolve_memory_mechanisms(const TrainOptions& options, const models::LlamaConfig& config);

// Sets the forward options' memory fields.
void apply_to(const MemoryMechanisms& m, models::ForwardOptions& forward);

}  // namespace train
