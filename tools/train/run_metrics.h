// metrics.jsonl of a run being written, and how a run's staged output ends (the SFT and
// DPO trainers share both). While the run goes on the file is metrics.jsonl.partial in
// the staging directory (tools/train/run_output.h), flushed line by line so `train70b
// plot` can read it live; when the run ends or stops it is renamed metrics.jsonl and the
// staging directory is swapped in as the output.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "tools/train/evaluate.h"
#include "tools/train/progress.h"
#include "tools/train/run_output.h"

namespace train {

class RunMetrics {
 public:
  // `output`: --output as the user gave it (for messages).
  RunMetrics(const StagedOutput& staged, const std::string& output);
  // One line, flushed.
  void write(const nlohmann::json& line);
  // Lines as they are (the metrics of a resumed run so far), flushed.
  void write_raw(const std::string& lines);
  void flush() { file_.flush(); }
  // The file being written, and where it will be once the output is published.
  const std::filesystem::path& partial_path() const { return partial_; }
  const std::filesystem::path& final_path() const { return final_; }
  const std::string& output() const { return output_; }
  // Closes it under its complete name inside the staging directory.
  void complete();

 private:
  std::string output_;
  std::filesystem::path partial_, complete_, final_;
  std::ofstream file_;
};

// An "eval" line: loss, perplexity, accuracy and tokens of `split` ("held-out", "general").
void write_eval_event(RunMetrics& metrics, const char* when, int64_t step, const EvalResult& r, const char* split);

// The forgetting check's verdict (evaluate.h forgetting_line) as a "forgetting" line;
// returns the verdict, *forgetting says whether it fired.
std::string write_forgetting(RunMetrics& metrics, const EvalResult& before, const EvalResult& after,
                             double threshold, bool* forgetting);

// The device memory fields of a train line, on a GPU.
void add_device_memory(nlohmann::json& line, const MemorySample& memory);

// A diverged run stops: its `stopped` line with `reason`, the metrics completed, the output
// published without an adapter; then engine::Error(reason; where the metrics are; `more`).
[[noreturn]] void stop_run(StagedOutput& staged, RunMetrics& metrics, int64_t step, const std::string& reason,
                           const std::string& more = "");

// A finished run whose adapter (if any) is already in the staging directory: the metrics
// completed, the plots drawn (a failure is a warning on `log`, not the run's), the output
// published, and where the adapter is said on `log` when `adapter_written`. Returns the
// plots directory, or "" when none was drawn.
std::string publish_run(StagedOutput& staged, RunMetrics& metrics, bool adapter_written, std::ostream& log);

}  // namespace train
