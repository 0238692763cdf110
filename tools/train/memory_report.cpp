#include "tools/train/memory_report.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

#include "engine/allocator.h"
#include "engine/cuda/pinned_allocator.h"
#include "engine/gpu_spec.h"
#include "engine/io/atomic_file.h"
#include "tools/train/memory_plan.h"
#include "tools/train/run_config.h"

namespace train {

namespace {

engine::Allocator& device_allocator() { return engine::allocator_for(engine::Device::cuda()); }

// "activations: step / forward / layer 3 / ..." -> "activations".
std::string category(const std::string& owner) { return owner.substr(0, owner.find(':')); }

std::string gib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", double(bytes) / double(int64_t(1) << 30));
  return buf;
}

}  // namespace

void start_memory_report() { device_allocator().set_owner_tracking(true); }

nlohmann::json memory_report(const TrainOptions& o, const models::LlamaConfig& config) {
  const engine::MemoryStats stats = device_allocator().stats();
  const engine::GpuSpec gpu = engine::cuda_device_spec();
  nlohmann::json r;
  r["dry_run"] = o.dry_run;
  r["gpu"] = gpu.name;
  r["device_total_bytes"] = gpu.total_memory;
  r["peak_device_bytes"] = stats.peak;
  r["peak_device_block_bytes"] = stats.block_peak;
  r["planned_device_bytes"] = nullptr;
  try {
    r["planned_device_bytes"] = plan_memory(config, o, gpu).peak_device_bytes;
  } catch (const std::exception& e) {
    r["planned_device_note"] = e.what();
  }
  r["peak_host_pinned_bytes"] = engine::cuda::pinned_memory_available()
                                    ? engine::cuda::pinned_allocator().stats().peak
                                    : size_t{0};
  const int64_t budget = max_gpu_mem_bytes(o, gpu);
  r["max_gpu_mem_bytes"] = budget;
  r["fits"] = static_cast<int64_t>(stats.block_peak) <= budget;
  nlohmann::json owners = nlohmann::json::array();
  std::map<std::string, int64_t> categories;
  for (const engine::OwnerBytes& b : device_allocator().owners_at_peak()) {
    owners.push_back({{"owner", b.owner}, {"bytes", b.bytes}});
    categories[category(b.owner)] += static_cast<int64_t>(b.bytes);
  }
  r["owners_at_peak"] = owners;
  r["categories_at_peak"] = categories;
  r["flags"] = options_to_json(o);
  r["flags"]["dry_run"] = o.dry_run;
  r["flags"]["gpu"] = o.gpu.empty() ? "a100-80gb" : o.gpu;
  return r;
}

void write_memory_report(const TrainOptions& o, const nlohmann::json& r,
                         const std::filesystem::path& dir, std::ostream& log) {
  const int64_t peak = r["peak_device_bytes"], blocks = r["peak_device_block_bytes"],
                budget = r["max_gpu_mem_bytes"];
  log << (o.dry_run ? "dry run on " : "memory on ") << r["gpu"].get<std::string>()
      << ": device peak " << gib(peak) << " (" << peak << " bytes; " << gib(blocks)
      << " in allocator blocks), budget " << gib(budget) << ": "
      << (r["fits"].get<bool>() ? "fits" : "DOES NOT FIT") << "\n";
  if (!r["planned_device_bytes"].is_null())
    log << "  planned " << gib(r["planned_device_bytes"].get<int64_t>()) << "\n";
  log << "  pinned host peak " << gib(r["peak_host_pinned_bytes"].get<int64_t>()) << "\n";
  log << "  live at the peak, by owner:\n";
  std::vector<std::pair<int64_t, std::string>> sorted;
  for (const auto& [name, bytes] : r["categories_at_peak"].items())
    sorted.push_back({bytes.get<int64_t>(), name});
  std::sort(sorted.rbegin(), sorted.rend());
  for (const auto& [bytes, name] : sorted) {
    char line[160];
    std::snprintf(line, sizeof line, "    %-14s %10s  %5.1f%%\n", name.c_str(), gib(bytes).c_str(),
                  peak ? 100.0 * double(bytes) / double(peak) : 0.0);
    log << line;
  }
  log << "  largest owners at the peak:\n";
  int shown = 0;
  for (const auto& b : r["owners_at_peak"]) {
    if (++shown > 12) break;
    log << "    " << gib(b["bytes"].get<int64_t>()) << "  " << b["owner"].get<std::string>() << "\n";
  }
  engine::io::write_file_atomic((dir / "memory.json").string(), r.dump(2) + "\n");
  log << "  in " << (std::filesystem::path(o.output) / "memory.json").string() << "\n" << std::flush;
}

}  // namespace train
