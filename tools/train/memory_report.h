// The memory report of a CUDA run (docs/memory.md, "Dry run"): the caching allocator's
// peak, the live set at the peak by owner (engine/allocator.h: MemoryOwnerScope and the
// NVTX ranges), the pinned host peak, the budget and the plan, printed and written to
// OUTPUT/memory.json. A dry run and a run on a GPU write the same file, so that the two
// can be compared byte for byte.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <ostream>

#include "models/llama_config.h"
#include "tools/train/options.h"

namespace train {

// Starts owner tracking on the CUDA allocator; call before the model loads.
void start_memory_report();

// The report as JSON: peak_device_bytes, peak_device_block_bytes, planned_device_bytes
// (null when the planner cannot plan these flags), peak_host_pinned_bytes,
// max_gpu_mem_bytes, fits, dry_run, gpu, owners_at_peak, categories_at_peak, flags.
nlohmann::json memory_report(const TrainOptions& options, const models::LlamaConfig& config);

// Prints the report's summary to `log` and writes memory.json into `dir` (the run's
// staged output, published as OUTPUT/).
void write_memory_report(const TrainOptions& options, const nlohmann::json& report,
                         const std::filesystem::path& dir, std::ostream& log);

}  // namespace train
