// What the SFT and DPO training loops share to be resumable (tools/train/checkpoint.h):
// the data order and the training clock, both kept in a TrainProgress, and the checkpoint
// after a step (every --save-every steps, and on SIGINT/SIGTERM, which then stops the run).
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "engine/optim/optimizer.h"
#include "engine/rng.h"
#include "models/llama.h"
#include "models/lora.h"
#include "tools/train/checkpoint.h"
#include "tools/train/options.h"
#include "tools/train/run_metrics.h"
#include "tools/train/stop_signal.h"

namespace train {

// What a checkpoint holds besides the progress.
struct CheckpointContent {
  const nlohmann::json& identity;    // run_identity()
  const nlohmann::json& run_config;  // run_config.json
  const engine::optim::Optimizer& optimizer;
  const models::LlamaModel& model;
  const models::LoraConfig& lora;
  const std::string& base_name;
};

// --output before anything is read or loaded: writable, written by train70b (or new), what
// killed runs left cleaned; returns the checkpoint --resume names (empty for a new run,
// refusing an output that holds an earlier run's checkpoints).
std::filesystem::path prepare_output(const TrainOptions& o, std::ostream& log);

// --resume: the checkpoint in `dir` checked against `identity` and this run's size, the
// LoRA factors and the optimizer state loaded, the metrics so far and a "resumed" event
// written, a line on `log`. Returns the position to continue from.
TrainProgress resume_from(const std::filesystem::path& dir, const nlohmann::json& identity,
                          models::LlamaModel& model, engine::optim::Optimizer& optimizer, int64_t train_units,
                          int64_t total_steps, RunMetrics& metrics, std::ostream& log);

class ResumableRun {
 public:
  // Continues at `progress`'s data position and training time (zero for a new run).
  ResumableRun(const TrainOptions& options, TrainProgress& progress, int64_t train_units, int64_t total_steps);

  // The next `n` training units: a fresh seeded permutation of them per epoch.
  std::vector<int64_t> next_indices(int64_t n);
  // Seconds of training so far, the time before a resume included.
  double seconds() const;

  // After step `done` (progress.step set by the caller): a checkpoint when --save-every says
  // so or SIGINT/SIGTERM came, announced through `say`; after a signal, throws engine::Error
  // with the one line that says where the checkpoint is and how to continue.
  void save_if_due(int64_t done, const CheckpointContent& content, RunMetrics& metrics,
                   const std::function<void(const std::string&)>& say);

 private:
  const TrainOptions& o_;
  TrainProgress& p_;
  int64_t units_, total_steps_;
  engine::Generator shuffle_;
  std::chrono::steady_clock::time_point start_;
  StopSignals stop_;
};

}  // namespace train
