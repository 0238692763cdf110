// Checkpoints for exact resume. OUTPUT/checkpoints/checkpoint-<step>/ holds
//   adapter_config.json, adapter_model.safetensors   the LoRA factors (a PEFT adapter)
//   optimizer.safetensors                            Optimizer::state(): moments, statistics, step
//   trainer_state.json                               step, shuffle generator position, the epoch's
//                                                    order and cursor, counters, the evaluations
//                                                    before step 1, and the run's identity
//   run_config.json, metrics.jsonl                   the run's config and its metrics so far
// Dropout masks and the learning rate are functions of the step, so nothing else is needed
// for a resumed run to continue bit for bit. A checkpoint is written into
// checkpoints/.tmp-checkpoint.<pid>/, every file fsynced, then renamed to its name and the
// directory fsynced: a checkpoint-<step> directory is always complete.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/optim/optimizer.h"
#include "models/dataset.h"
#include "models/llama.h"
#include "models/lora.h"
#include "tools/train/trainer.h"

namespace train {

// Where the training loop is, beyond the weights and the optimizer.
struct TrainProgress {
  int64_t step = 0;               // optimizer steps done
  uint64_t shuffle_offset = 0;    // the shuffle generator's counter
  std::vector<int64_t> order;     // the current epoch's permutation of training units
  int64_t cursor = 0;             // next position in `order`
  int64_t tokens_seen = 0;
  double train_seconds = 0;
  int64_t nonfinite_in_a_row = 0, nonfinite_steps = 0;
  EvalResult before, general_before;  // evaluations before step 1, for the summary
};

struct CheckpointData {
  TrainProgress progress;
  nlohmann::json identity;    // run_identity(): must match to resume
  nlohmann::json run_config;  // the run's run_config.json
  engine::optim::OptimizerState optimizer;
};

// What a checkpoint must agree with to be resumed: the model, the LoRA factors' names and
// shapes, the optimizer's kind, the data (a fingerprint of both splits) and the options
// that shape the trajectory (all of run_config's but output, logging, evaluation, saving).
nlohmann::json run_identity(const std::string& model_name, const models::LlamaModel& model,
                            const std::string& optimizer_kind, const std::vector<models::Example>& train,
                            const std::vector<models::Example>& eval, const nlohmann::json& options);

// A 64-bit FNV-1a hash of the examples' ids and labels, as 16 hex digits.
std::string dataset_fingerprint(const std::vector<models::Example>& examples);

// Writes checkpoint-<progress.step> under output/checkpoints (creating the output with its
// marker if needed), copying `metrics_file` (the metrics so far) into it, then keeps only
// the newest `keep_last`. Returns the checkpoint's directory.
std::filesystem::path save_checkpoint(const std::filesystem::path& output, const CheckpointData& data,
                                      const models::LlamaModel& model, const models::LoraConfig& lora,
                                      const std::string& base_model_name,
                                      const std::filesystem::path& metrics_file, int64_t keep_last);

// --resume: "latest" is the newest complete checkpoint in output/checkpoints; anything else
// a checkpoint directory. Throws engine::InputError naming --resume when there is none.
std::filesystem::path resolve_resume(const std::string& resume, const std::filesystem::path& output);

// Where a run starts: resolve_resume(resume) when --resume is given, else an empty path,
// refusing (engine::InputError) an output that holds an earlier run's checkpoints.
std::filesystem::path resume_point(const std::string& resume, const std::filesystem::path& output);

// Newest complete checkpoint under output/checkpoints, or an empty path.
std::filesystem::path latest_checkpoint(const std::filesystem::path& output);

// Reads a checkpoint, refusing (engine::InputError, one line naming --resume and the first
// difference) one whose identity differs from `expected`; loads its LoRA factors into
// `model`. *metrics gets its metrics.jsonl.
CheckpointData load_checkpoint(const std::filesystem::path& dir, const nlohmann::json& expected,
                               models::LlamaModel& model, std::string* metrics);

// Refuses (engine::InputError naming the checkpoint's trainer_state.json) a position this
// run cannot continue from: a data order over another number of training units, or a step
// past the run's total.
void check_resume_position(const TrainProgress& progress, int64_t train_units, int64_t total_steps,
                           const std::filesystem::path& dir);

}  // namespace train
