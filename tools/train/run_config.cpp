// TrainOptions <-> JSON for run_config.json and --config. One table names every field once;
// tests/tools/test_train70b_runs.cpp checks that every flag of --help is in it.
#include "tools/train/run_config.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>

#include "engine/error.h"

namespace train {

namespace {

using nlohmann::json;

// X(flag name, member)
#define TRAIN70B_RUN_CONFIG_FIELDS(X)                                                          \
  X("demo", demo) X("model", model) X("dataset", dataset) X("output", output)                  \
  X("lora-r", lora_r) X("lora-alpha", lora_alpha) X("lora-dropout", lora_dropout)              \
  X("lora-targets", lora_targets) X("rslora", rslora) X("base-format", base_format)            \
  X("device", device) X("lr", lr) X("epochs", epochs) X("max-steps", max_steps)                \
  X("batch-size", batch_size) X("grad-accum", grad_accum) X("max-seq-len", max_seq_len)        \
  X("packing", packing) X("chat-template", chat_template) X("train-on-inputs", train_on_inputs) \
  X("truncation", truncation) X("preview", preview) X("max-line-size", max_line_size)          \
  X("schedule", schedule)                                                                      \
  X("warmup-ratio", warmup_ratio) X("weight-decay", weight_decay)                              \
  X("max-grad-norm", max_grad_norm) X("checkpoint-layers", checkpoint_layers)                  \
  X("max-nonfinite-steps", max_nonfinite_steps) X("eval-fraction", eval_fraction)              \
  X("eval-every", eval_every) X("general-eval", general_eval)                                  \
  X("forgetting-threshold", forgetting_threshold) X("log-every", log_every)                    \
  X("save-every", save_every) X("save-total-limit", save_total_limit) X("seed", seed)  \
  X("method", method) X("beta", beta) X("label-smoothing", label_smoothing) X("loss", dpo_loss)    \
  X("precompute-ref", precompute_ref) X("adapter", adapter)                                   \
  X("offload-checkpoints", offload_checkpoints) X("tile-tokens", tile_tokens)                  \
  X("embedding-on-host", embedding_on_host) X("optim", optim) X("max-gpu-mem", max_gpu_mem)     \
  X("auto-fit", auto_fit) X("dry-run", dry_run) X("gpu", gpu)

// Each reader checks the JSON type first: nlohmann would silently truncate 1.5 to an int.
std::string read(const json& v, bool& out) {
  if (!v.is_boolean()) return "expected true or false";
  out = v.get<bool>();
  return {};
}
std::string read(const json& v, int64_t& out) {
  if (!v.is_number_integer() ||
      (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())))
    return "expected an integer";
  out = v.get<int64_t>();
  return {};
}
std::string read(const json& v, uint64_t& out) {
  if (!v.is_number_unsigned()) return "expected a non-negative integer";
  out = v.get<uint64_t>();
  return {};
}
std::string read(const json& v, float& out) {
  if (!v.is_number()) return "expected a number";
  const double d = v.get<double>();
  if (std::fabs(d) > std::numeric_limits<float>::max()) return "expected a number within float range";
  out = static_cast<float>(d);
  return {};
}
std::string read(const json& v, std::string& out) {
  if (!v.is_string()) return "expected a string";
  out = v.get<std::string>();
  return {};
}

// A float as the shortest decimal that reads back to it (0.1, not 0.10000000149011612), when
// that decimal, parsed as a double and narrowed, gives the float again; else the exact double.
json config_value(float f) {
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof buf, f).ptr;
  const double shortest = std::strtod(std::string(buf, end).c_str(), nullptr);
  return static_cast<float>(shortest) == f ? shortest : static_cast<double>(f);
}
template <class T>
json config_value(const T& v) {
  return v;
}

}  // namespace

json options_to_json(const TrainOptions& o) {
  json j = json::object();
#define TRAIN70B_WRITE(key, member) j[key] = config_value(o.member);
  TRAIN70B_RUN_CONFIG_FIELDS(TRAIN70B_WRITE)
#undef TRAIN70B_WRITE
  return j;
}

std::vector<std::string> run_config_keys() {
  std::vector<std::string> keys;
#define TRAIN70B_KEY(key, member) keys.push_back(key);
  TRAIN70B_RUN_CONFIG_FIELDS(TRAIN70B_KEY)
#undef TRAIN70B_KEY
  return keys;
}

std::set<std::string> apply_run_config(const std::string& path, TrainOptions& o,
                                       const std::function<bool(const std::string&)>& given) {
  std::ifstream in(path);
  ENGINE_INPUT_CHECK(in.good(), "--config ", path, ": cannot open the file");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw engine::InputError(engine::one_line("--config " + path + ": not valid JSON: " + e.what()));
  }
  ENGINE_INPUT_CHECK(j.is_object(), "--config ", path, ": expected a JSON object of flag names and values");
  std::set<std::string> found;
  for (const auto& [key, value] : j.items()) {
    if (key == "resolved") continue;  // what the run found, not a setting
    std::string problem = "unknown key (not a train70b flag)";
#define TRAIN70B_READ(name, member)                            \
  if (key == name) {                                           \
    auto field = o.member;                                     \
    problem = read(value, field);                              \
    if (problem.empty() && !given(key)) o.member = field;      \
  }
    TRAIN70B_RUN_CONFIG_FIELDS(TRAIN70B_READ)
#undef TRAIN70B_READ
    ENGINE_INPUT_CHECK(problem.empty(), "--config ", path, ": key '", key, "': ", problem,
                       problem.rfind("unknown", 0) == 0 ? "" : ", got " + value.dump());
    found.insert(key);
  }
  return found;
}

}  // namespace train
