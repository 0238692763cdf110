// The train70b pipeline: load the model (HF directory or preset) and dataset,
// quantize the frozen base, add LoRA, evaluate the held-out split, train with
// AdamW, evaluate again, write the PEFT adapter and metrics.jsonl. Everything the
// user supplied is validated before the output directory is touched.
#pragma once
#include <ostream>

#include "tools/train/options.h"
#include "tools/train/progress.h"

namespace train {

struct EvalResult {
  double loss = 0;       // mean over counted target tokens
  double accuracy = 0;   // greedy next-token accuracy over the same tokens
  int64_t tokens = 0;
};

struct RunSummary {
  EvalResult before, after;  // held-out; tokens 0 when there is none (--eval-fraction 0)
  EvalResult general_before, general_after;  // --general-eval; tokens 0 without it
  bool forgetting = false;   // general perplexity rose more than --forgetting-threshold
  int64_t resumed_from = 0;  // the checkpoint's step when resumed
  int64_t steps = 0;
  int64_t nonfinite_steps = 0;  // skipped: a NaN/Inf loss or gradient norm
  RunReport report;             // the end-of-run summary table (format_summary_table)
  bool memory_fits = true;      // CUDA runs: memory.json's "fits" (tools/train/memory_report.h)
};

// Throws engine::Error (one line) on bad input; progress goes to `log`.
RunSummary run_training(const TrainOptions& options, std::ostream& log);

}  // namespace train
