// The memory planner: from the model config and the flags, before anything is allocated,
// the device and host memory a train70b run will need, item by item (docs/memory.md, "The
// plan"). The peak comes from replaying the run's allocations (tools/train/memory_sim.h),
// so it is the caching allocator's in-use peak, the number `train70b --dry-run` measures.
//
//   fits  <=>  rounded peak (every block at its size class) <= --max-gpu-mem
//   --max-gpu-mem default: the device's memory minus kCudaContextReserve (the CUDA
//   context, cuBLASLt's kernels and the driver's own allocations, outside the allocator)
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "engine/gpu_spec.h"
#include "models/llama_config.h"
#include "tools/train/options.h"

namespace train {

using DeviceSpec = engine::GpuSpec;

// What the CUDA context takes outside the allocator on an 80 GB A100/H100 with CUDA 12-13
// (context, module images of the kernels and cuBLASLt, the driver's heap): ~0.5-0.8 GiB
// measured by others (PyTorch's "non-PyTorch memory"); 1 GiB keeps a margin.
inline constexpr int64_t kCudaContextReserve = int64_t(1) << 30;

// The memory flags with every `auto` resolved: what the run will do.
struct MemoryChoices {
  int64_t batch_size = 1, grad_accum = 1, seq = 0;
  bool offload_checkpoints = false;
  int64_t tile_tokens = 0;  // 0: untiled
  bool embedding_on_host = false;
  std::string optim = "adamw";
  bool checkpoint_layers = true;
};

struct MemoryItem {
  std::string name;     // "weights", "checkpoints", ...
  int64_t bytes = 0;
  std::string formula;  // how it is computed, for the log and docs
};

struct MemoryPlan {
  MemoryChoices choices;
  std::string device;                 // the DeviceSpec's name
  std::vector<MemoryItem> device_items;  // the live set at the peak, by owner (sums to the peak)
  std::vector<MemoryItem> host_items;
  int64_t peak_device_bytes = 0;      // allocator in-use peak (dry run: peak_device_bytes)
  int64_t reserved_device_bytes = 0;  // the same with size-class rounding
  int64_t context_reserve_bytes = kCudaContextReserve;
  int64_t max_gpu_mem_bytes = 0;
  bool fits = false;
  std::string peak_phase;
  int64_t host_pinned_bytes = 0, host_bytes = 0;
};

// The plan of a run with these concrete choices (no `auto` left).
MemoryPlan plan_memory(const models::LlamaConfig& config, const TrainOptions& options,
                       const MemoryChoices& choices, const DeviceSpec& device);
// The plan with the options' own values (`auto` resolved as resolve_auto_memory_options).
MemoryPlan plan_memory(const models::LlamaConfig& config, const TrainOptions& options,
                       const DeviceSpec& device);

nlohmann::json to_json(const MemoryPlan& plan);
// A few lines: the items, the peak, the budget, fits or not.
std::string plan_table(const MemoryPlan& plan);

// --max-gpu-mem's value: BYTES, <n>GiB, <n>GB, <n>MiB, <n>MB; throws engine::InputError.
int64_t parse_memory_size(const std::string& text, const char* flag);
// The budget: --max-gpu-mem, else the device's memory minus the context reserve.
int64_t max_gpu_mem_bytes(const TrainOptions& options, const DeviceSpec& device);

// Turns `auto` (and --auto-fit) into choices: with --auto-fit the largest micro-batch (up
// to --batch-size, --grad-accum raised to keep sequences per step), then checkpoints on
// the device before offloaded, then the widest MLP tile, that fit; without it, offload and
// tiling only where the plan needs them. Logs what it picked and why. When nothing fits,
// throws engine::InputError: one line with the largest items and the flag changes that
// would fit (each found by planning it).
MemoryChoices resolve_auto_memory_options(const models::LlamaConfig& config,
                                          const TrainOptions& options, const DeviceSpec& device,
                                          std::ostream& log);

// Before anything loads, on a CUDA run or a dry run (nothing on the CPU): plans with the
// flags, prints the plan, refuses (engine::InputError with advice) when nothing fits, and
// returns the options with the choices of `auto` and --auto-fit applied.
// The choices with every mechanism the flags allow (offload, host embedding, the narrowest
// MLP tile) when nothing fits, else the first that fits: what a refused dry run measures.
MemoryChoices frugal_memory_choices(const models::LlamaConfig& config, const TrainOptions& options,
                                    const DeviceSpec& device);

// A dry run is planned and logged but never refused: it measures what the flags do.
TrainOptions apply_memory_plan(const TrainOptions& options, std::ostream& log);
// The options with the choices' values in the memory flags.
TrainOptions with_choices(const TrainOptions& options, const MemoryChoices& choices);

}  // namespace train
