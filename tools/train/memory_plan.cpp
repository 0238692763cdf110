#include "tools/train/memory_plan.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <sstream>

#include "engine/allocator.h"
#include "engine/error.h"
#include "models/lora.h"
#include "tools/train/memory_sim.h"

namespace train {

namespace {

std::string gib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(int64_t(1) << 30));
  return buf;
}

SimInput sim_input(const models::LlamaConfig& config, const TrainOptions& o, const MemoryChoices& ch,
                   const DeviceSpec& device) {
  SimInput in;
  in.config = config;
  in.batch = ch.batch_size;
  in.seq = ch.seq;
  in.grad_accum = ch.grad_accum;
  in.lora_r = o.lora_r;
  const std::vector<std::string> targets = models::parse_lora_targets(o.lora_targets);
  for (size_t j = 0; j < 7; ++j)
    in.adapted[j] = std::find(targets.begin(), targets.end(), models::all_linear_names()[j]) != targets.end();
  in.dropout = o.lora_dropout > 0;
  in.checkpoint_layers = ch.checkpoint_layers;
  in.offload_checkpoints = ch.offload_checkpoints && ch.checkpoint_layers;
  in.tile_tokens = ch.tile_tokens;
  in.embedding_on_host = ch.embedding_on_host && !config.tie_embeddings;
  in.optim = ch.optim;
  in.eval_batch = o.eval_fraction > 0 ? ch.batch_size : 0;  // --eval-fraction 0: no evaluation
  in.eval_seq = ch.seq;
  in.sm_count = device.sms;
  in.dpo = o.method == "dpo";
  in.dpo_reference_each_step = !o.precompute_ref;
  return in;
}

// Closed forms of the items that do not depend on the schedule of the step.
struct StaticBytes {
  int64_t nf4 = 0, dense = 0, lora = 0;
};
StaticBytes static_bytes(const models::LlamaConfig& c, const SimInput& in) {
  const int64_t h = c.hidden, q = c.q_dim(), kv = c.kv_dim(), i = c.intermediate;
  const int64_t shapes[7][2] = {{h, q}, {h, kv}, {h, kv}, {q, h}, {h, i}, {h, i}, {i, h}};
  StaticBytes s;
  for (int j = 0; j < 7; ++j) {
    s.nf4 += c.layers * nf4_weight_bytes(shapes[j][1], shapes[j][0]);
    if (in.adapted[j]) s.lora += c.layers * (in.lora_r * shapes[j][0] + shapes[j][1] * in.lora_r) * 4;
  }
  s.dense = (2 * c.layers + 1) * h * 2 + (c.tie_embeddings ? 0 : c.vocab * h * 2) +
            (in.embedding_on_host ? 0 : c.vocab * h * 2);
  return s;
}

std::string formula_for(Owner owner, const models::LlamaConfig& c, const SimInput& in,
                        const StaticBytes& s) {
  const int64_t t = (in.dpo ? 2 : 1) * in.batch * in.seq;  // DPO: chosen and rejected rows
  std::ostringstream f;
  switch (owner) {
    case Owner::Weights:
      f << "NF4 linears " << gib(s.nf4) << " (per [out, in]: out*in/2 + out*in/64 + 4*ceil(out*in/16384)), "
        << "bf16 norms, lm_head" << (in.embedding_on_host ? "" : " and embedding") << " (V*H*2 each) "
        << gib(s.dense);
      break;
    case Owner::Lora: f << "fp32 A [r, in] + B [out, r] per adapted linear, x " << c.layers << " layers"; break;
    case Owner::LoraGrads: f << "fp32, as LoRA; they accumulate layer by layer in backward"; break;
    case Owner::Optimizer:
      f << (in.optim == "adamw" ? "AdamW m and v, fp32, resident: 2 x LoRA" : "paged AdamW: device pages");
      break;
    case Owner::Checkpoints:
      f << (in.offload_checkpoints ? "offloaded: the layer inputs in flight on the device, "
                                   : "each layer's bf16 input: layers x T x H x 2 = ")
        << (in.offload_checkpoints ? "T x H x 2 each" : gib(c.layers * t * c.hidden * 2));
      break;
    case Owner::Activations: f << "the recorded layer (recompute) and forward values at the peak"; break;
    case Owner::Gradients: f << "activation gradients in flight (slots, clones, op outputs)"; break;
    case Owner::DequantWeight: f << "one frozen weight dequantized to bf16 for its GEMM"; break;
    case Owner::Workspace:
      f << "cuBLASLt 32 MiB, LoRA operand copies, masked inputs, attention and loss scratch";
      break;
    case Owner::Count: break;
  }
  return f.str();
}

}  // namespace

MemoryPlan plan_memory(const models::LlamaConfig& config, const TrainOptions& options,
                       const MemoryChoices& choices, const DeviceSpec& device) {
  const SimInput in = sim_input(config, options, choices, device);
  const SimResult r = simulate_run(in);
  const StaticBytes s = static_bytes(config, in);
  MemoryPlan p;
  p.choices = choices;
  p.device = device.name;
  for (size_t k = 0; k < r.at_peak.size(); ++k)
    if (r.at_peak[k] > 0)
      p.device_items.push_back({owner_name(Owner(k)), r.at_peak[k], formula_for(Owner(k), config, in, s)});
  p.peak_device_bytes = r.peak;
  p.reserved_device_bytes = r.peak_rounded;
  p.max_gpu_mem_bytes = max_gpu_mem_bytes(options, device);
  p.fits = p.reserved_device_bytes <= p.max_gpu_mem_bytes;
  p.peak_phase = r.peak_phase;
  p.host_pinned_bytes = r.host_pinned;
  p.host_bytes = r.host;
  const int64_t t = in.batch * in.seq;
  if (in.offload_checkpoints)
    p.host_items.push_back({"checkpoints (pinned)", r.host_pinned,
                            "layers x T x H x 2 = " + std::to_string(config.layers) + " x " +
                                std::to_string(t) + " x " + std::to_string(config.hidden) + " x 2"});
  if (in.embedding_on_host) p.host_items.push_back({"embedding", r.host, "V x H x 2 (bf16)"});
  return p;
}


nlohmann::json to_json(const MemoryPlan& p) {
  nlohmann::json items = nlohmann::json::array(), host = nlohmann::json::array();
  for (const MemoryItem& i : p.device_items)
    items.push_back({{"name", i.name}, {"bytes", i.bytes}, {"formula", i.formula}});
  for (const MemoryItem& i : p.host_items)
    host.push_back({{"name", i.name}, {"bytes", i.bytes}, {"formula", i.formula}});
  return {{"planned_device_bytes", p.peak_device_bytes},
          {"planned_reserved_bytes", p.reserved_device_bytes},
          {"context_reserve_bytes", p.context_reserve_bytes},
          {"max_gpu_mem_bytes", p.max_gpu_mem_bytes},
          {"fits", p.fits},
          {"peak_phase", p.peak_phase},
          {"device", p.device},
          {"device_items", items},
          {"host_items", host},
          {"planned_host_pinned_bytes", p.host_pinned_bytes},
          {"planned_host_bytes", p.host_bytes},
          {"choices",
           {{"batch_size", p.choices.batch_size}, {"grad_accum", p.choices.grad_accum},
            {"seq", p.choices.seq}, {"offload_checkpoints", p.choices.offload_checkpoints},
            {"tile_tokens", p.choices.tile_tokens}, {"embedding_on_host", p.choices.embedding_on_host},
            {"optim", p.choices.optim}}}};
}

std::string plan_table(const MemoryPlan& p) {
  std::ostringstream out;
  char buf[256];
  out << "memory plan (" << p.device << ", " << p.choices.batch_size << " x " << p.choices.seq
      << " tokens per micro-batch, checkpoints " << (p.choices.offload_checkpoints ? "offloaded" : "on the device")
      << ", MLP tile " << (p.choices.tile_tokens > 0 ? std::to_string(p.choices.tile_tokens) : "none")
      << ", optimizer " << p.choices.optim << "):\n";
  for (const MemoryItem& i : p.device_items) {
    std::snprintf(buf, sizeof buf, "  device %-22s %12s\n", i.name.c_str(), gib(i.bytes).c_str());
    out << buf;
  }
  std::snprintf(buf, sizeof buf, "  device peak %s (%s in size classes) at %s; + CUDA context %s\n",
                gib(p.peak_device_bytes).c_str(), gib(p.reserved_device_bytes).c_str(),
                p.peak_phase.c_str(), gib(p.context_reserve_bytes).c_str());
  out << buf;
  for (const MemoryItem& i : p.host_items) {
    std::snprintf(buf, sizeof buf, "  host   %-22s %12s\n", i.name.c_str(), gib(i.bytes).c_str());
    out << buf;
  }
  std::snprintf(buf, sizeof buf, "  --max-gpu-mem %s: %s\n", gib(p.max_gpu_mem_bytes).c_str(),
                p.fits ? "fits" : "does NOT fit");
  out << buf;
  return out.str();
}

int64_t parse_memory_size(const std::string& text, const char* flag) {
  size_t end = 0;
  double value = -1;
  try {
    value = std::stod(text, &end);
  } catch (const std::exception&) {
    end = 0;
  }
  std::string unit = text.substr(end);
  for (char& ch : unit) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  double scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "kib") scale = 1024.0;
  else if (unit == "mib") scale = 1024.0 * 1024;
  else if (unit == "gib") scale = 1024.0 * 1024 * 1024;
  else if (unit == "kb") scale = 1e3;
  else if (unit == "mb") scale = 1e6;
  else if (unit == "gb") scale = 1e9;
  ENGINE_INPUT_CHECK(end > 0 && scale > 0 && value > 0 && value * scale < 9e18, flag, " '", text,
                     "' is not a memory size (BYTES, or a number with GiB, GB, MiB, MB, KiB or KB)");
  return static_cast<int64_t>(value * scale);
}

int64_t max_gpu_mem_bytes(const TrainOptions& o, const DeviceSpec& device) {
  if (!o.max_gpu_mem.empty()) return parse_memory_size(o.max_gpu_mem, "--max-gpu-mem");
  // A device smaller than the reserve has no room at all (0, not a negative budget).
  return std::max<int64_t>(0, static_cast<int64_t>(device.total_memory) - kCudaContextReserve);
}

}  // namespace train
