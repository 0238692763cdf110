// resolve_auto_memory_options (memory_plan.h): the memory flags' `auto` values and
// --auto-fit turned into choices by planning candidates, cheapest in speed first, and the
// refusal with advice when none fits. Every candidate is a full plan (microseconds to
// milliseconds each), so the advice names changes that were planned, not guessed.
#include <algorithm>
#include <sstream>

#include "engine/backend.h"
#include "engine/error.h"
#include "tools/train/dry_run.h"
#include "tools/train/memory_plan.h"
#include "tools/train/model_setup.h"

namespace train {

namespace {

std::string gib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / double(int64_t(1) << 30));
  return buf;
}

// A flag's possible values: given ("on"/"off") or both when auto.
std::vector<bool> options_of(const std::string& flag_value) {
  if (flag_value == "on") return {true};
  if (flag_value == "off") return {false};
  return {false, true};
}

// The memory flags as the options give them ("auto" where the flag is auto or absent).
struct MemoryFlags {
  std::string offload = "auto", embedding = "auto", optim = "adamw";
  int64_t tile_tokens = 0;  // 0: auto
};
MemoryFlags memory_flags(const TrainOptions& o) {
  MemoryFlags f;
  f.offload = o.offload_checkpoints;
  f.embedding = o.embedding_on_host;
  f.tile_tokens = o.tile_tokens;
  f.optim = o.optim;
  return f;
}

// MLP tiles tried when tiling is auto: untiled first, then halving widths.
std::vector<int64_t> tile_candidates(int64_t given, int64_t tokens) {
  if (given > 0) return {given};
  std::vector<int64_t> out{0};
  for (int64_t t = 16384; t >= 256; t /= 2)
    if (t < tokens) out.push_back(t);
  return out;
}

struct Search {
  const models::LlamaConfig& config;
  const TrainOptions& options;
  const DeviceSpec& device;
  MemoryFlags flags;

  // The first candidate that fits, varying offload, tiling and the embedding's place, with
  // the micro-batch fixed; nullopt-like: fits == false when none does.
  MemoryPlan first_fit(MemoryChoices base) const {
    MemoryPlan last;
    for (bool embed : options_of(config.tie_embeddings ? "off" : flags.embedding))
      for (bool offload : options_of(flags.offload))
        for (int64_t tile : tile_candidates(flags.tile_tokens, base.batch_size * base.seq)) {
          MemoryChoices c = base;
          c.offload_checkpoints = offload && c.checkpoint_layers;
          c.tile_tokens = tile;
          c.embedding_on_host = embed;
          last = plan_memory(config, options, c, device);
          if (last.fits) return last;
        }
    return last;
  }
};

std::string largest_items(const MemoryPlan& p) {
  std::vector<MemoryItem> items = p.device_items;
  std::sort(items.begin(), items.end(), [](const MemoryItem& a, const MemoryItem& b) { return a.bytes > b.bytes; });
  std::ostringstream out;
  for (size_t i = 0; i < std::min<size_t>(3, items.size()); ++i)
    out << (i ? ", " : "") << items[i].name << " " << gib(items[i].bytes);
  return out.str();
}

std::string describe(const MemoryChoices& c) {
  std::ostringstream out;
  out << "--batch-size " << c.batch_size << " --grad-accum " << c.grad_accum << " --max-seq-len " << c.seq
      << " --offload-checkpoints " << (c.offload_checkpoints ? "on" : "off") << " --tile-tokens "
      << c.tile_tokens;
  if (c.embedding_on_host) out << " --embedding-on-host on";
  return out.str();
}


MemoryChoices base_choices(const TrainOptions& o) {
  MemoryChoices base;
  base.batch_size = o.batch_size;
  base.grad_accum = o.grad_accum;
  base.seq = o.max_seq_len;
  base.checkpoint_layers = o.checkpoint_layers;
  base.optim = o.optim;
  return base;
}

}  // namespace

MemoryChoices frugal_memory_choices(const models::LlamaConfig& config, const TrainOptions& o,
                                    const DeviceSpec& device) {
  return Search{config, o, device, memory_flags(o)}.first_fit(base_choices(o)).choices;
}

MemoryChoices resolve_auto_memory_options(const models::LlamaConfig& config,
                                          const TrainOptions& o, const DeviceSpec& device,
                                          std::ostream& log) {
  Search search{config, o, device, memory_flags(o)};
  const MemoryChoices base = base_choices(o);
  // --auto-fit: the largest micro-batch first, --grad-accum raised to keep the step's sequences.
  std::vector<int64_t> batches{o.batch_size};
  if (o.auto_fit)
    for (int64_t b = o.batch_size / 2; b >= 1; b /= 2) batches.push_back(b);
  MemoryPlan first;
  for (size_t i = 0; i < batches.size(); ++i) {
    MemoryChoices c = base;
    c.batch_size = batches[i];
    c.grad_accum = (o.batch_size * o.grad_accum + batches[i] - 1) / batches[i];
    MemoryPlan p = search.first_fit(c);
    if (i == 0) first = p;
    if (p.fits) {
      if (o.auto_fit)
        log << "--auto-fit picked " << describe(p.choices) << ": planned device peak "
            << gib(p.reserved_device_bytes) << " of --max-gpu-mem " << gib(p.max_gpu_mem_bytes) << "\n";
      return p.choices;
    }
  }
  // Nothing fits: name the largest items, and what would fit, each planned.
  MemoryChoices everything = base;  // every mechanism on, as the flags allow
  std::ostringstream advice;
  int found = 0;
  if (!o.auto_fit && o.batch_size > 1) {
    for (int64_t b = o.batch_size / 2; b >= 1 && !found; b /= 2) {
      MemoryChoices c = base;
      c.batch_size = b;
      c.grad_accum = (o.batch_size * o.grad_accum + b - 1) / b;
      MemoryPlan p = search.first_fit(c);
      if (p.fits) {
        advice << "; fits: --batch-size " << b << " --grad-accum " << c.grad_accum << " (" << gib(p.reserved_device_bytes)
               << ") or --auto-fit";
        ++found;
      }
    }
  }
  // The longest sequence that fits with a micro-batch of one, by bisection over planned runs.
  int64_t lo = 0, hi = o.max_seq_len;
  while (hi - lo > std::max<int64_t>(64, lo / 64)) {
    const int64_t mid = (lo + hi) / 2;
    MemoryChoices c = base;
    c.batch_size = 1;
    c.seq = mid;
    (search.first_fit(c).fits ? lo : hi) = mid;
  }
  if (lo > 0) advice << "; fits: --max-seq-len " << lo << (o.batch_size > 1 ? " --batch-size 1" : "");
  else advice << "; no sequence length fits: lower --lora-r or --lora-targets, or use a larger GPU";
  (void)everything;
  throw engine::InputError("--max-gpu-mem " + gib(first.max_gpu_mem_bytes) + ": the memory plan needs " +
                           gib(first.reserved_device_bytes) + " of device memory even with " +
                           describe(first.choices) + " (largest: " + largest_items(first) + ")" +
                           advice.str());
}

MemoryPlan plan_memory(const models::LlamaConfig& config, const TrainOptions& options,
                       const DeviceSpec& device) {
  std::ostringstream quiet;
  try {
    return plan_memory(config, options, resolve_auto_memory_options(config, options, device, quiet), device);
  } catch (const engine::InputError&) {  // nothing fits: the plan of the flags as given
    MemoryChoices c;
    c.batch_size = options.batch_size;
    c.grad_accum = options.grad_accum;
    c.seq = options.max_seq_len;
    c.checkpoint_layers = options.checkpoint_layers;
    const MemoryFlags f = memory_flags(options);
    c.offload_checkpoints = f.offload == "on";
    c.tile_tokens = f.tile_tokens;
    c.embedding_on_host = f.embedding == "on";
    c.optim = f.optim;
    return plan_memory(config, options, c, device);
  }
}

TrainOptions apply_memory_plan(const TrainOptions& o, std::ostream& log) {
  std::string no_gpu;
  const bool on_gpu = o.dry_run || o.device == "cuda" || (o.device == "auto" && engine::cuda_available(&no_gpu));
  if (!on_gpu) return o;
  const DeviceSpec device = o.dry_run ? dry_run_gpu(o) : engine::cuda_device_spec(0);
  const models::LlamaConfig config = resolve_model(o).config;
  MemoryChoices choices;
  try {
    choices = resolve_auto_memory_options(config, o, device, log);
  } catch (const engine::InputError& e) {
    // A dry run measures the flags as given, fitting or not: memory.json says whether they
    // fit and train70b-dry exits 3 when not.
    if (!o.dry_run) throw;
    log << "memory plan: " << e.what() << "; the dry run measures the flags as given\n";
    choices = frugal_memory_choices(config, o, device);
  }
  log << plan_table(plan_memory(config, o, choices, device));
  return with_choices(o, choices);
}

TrainOptions with_choices(const TrainOptions& o, const MemoryChoices& choices) {
  TrainOptions out = o;
  out.batch_size = choices.batch_size;
  out.grad_accum = choices.grad_accum;
  out.offload_checkpoints = choices.offload_checkpoints ? "on" : "off";
  // Untiled is a tile of the whole micro-batch (0 would mean auto to the mechanisms).
  out.tile_tokens = choices.tile_tokens > 0 ? choices.tile_tokens
                                            : std::min(kMaxSeqLen, choices.batch_size * choices.seq);
  out.embedding_on_host = choices.embedding_on_host ? "on" : "off";
  return out;
}

}  // namespace train
