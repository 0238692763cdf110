// train70b's progress output and end-of-run summary.
//   Live  (stdout is a terminal): one line rewritten in place ("\r", the line, "ESC[K")
//         after every step, fitted to the terminal's width so it never wraps;
//   Lines (a log file, CI): one plain line every --log-every steps, the first and the last;
//   Quiet (--quiet): nothing here; the caller prints only the summary table.
// The loss shown is an exponential moving average of the step losses (weight 0.9 on the
// past, bias-corrected as Adam's moments are, non-finite steps left out); the plain lines
// show the step's own loss beside it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "engine/dtype.h"

namespace train {

enum class ProgressMode { Live, Lines, Quiet };

// Memory now and at its peak. On a GPU "device" is the engine's caching allocator (bytes
// held by tensors); on the CPU it is the process's resident set, the same as "host".
struct MemorySample {
  bool gpu = false;
  size_t device_in_use = 0, device_peak = 0;
  size_t host_rss = 0, host_peak = 0;  // VmRSS and VmHWM of this process; 0 where unknown
};
MemorySample sample_memory(engine::Device device);

// Bias-corrected EMA of the step losses: after n finite values x_1..x_n,
// sum_i (1-b) b^(n-i) x_i / (1 - b^n). NaN before the first finite value.
class LossEma {
 public:
  explicit LossEma(double beta = 0.9) : beta_(beta) {}
  void add(double loss);
  double value() const;

 private:
  double beta_, sum_ = 0, weight_ = 0;
};

struct StepStatus {
  int64_t step = 0, total_steps = 0;  // step counts from 1
  double epoch = 0, total_epochs = 0;  // fractional passes over the training units
  double loss = 0, loss_ema = 0;
  double lr = 0, grad_norm = 0;
  double tokens_per_second = 0;
  double elapsed_seconds = 0;  // since the first step started
  MemorySample memory;
};

// "1h02m", "3m07s", "42s"; "?" for a negative or non-finite time.
std::string format_duration(double seconds);
// The live line without control characters, at most `width` columns: the fields in order
// of importance (step, loss, ETA, epoch, lr, tokens/s, memory), the ones that do not fit dropped.
std::string format_live_line(const StepStatus& s, int width);
std::string format_plain_line(const StepStatus& s);
// Columns of the terminal on stdout (TIOCGWINSZ, then $COLUMNS, then 80).
int terminal_width();

// Decides what to print for each step and keeps other lines from mixing into the live line.
class Progress {
 public:
  Progress(std::ostream& log, ProgressMode mode, int64_t log_every);
  ~Progress();
  // Prints (or rewrites) the step's line as the mode says.
  void step(const StepStatus& s);
  // A line of its own (an evaluation, a warning): clears the live line first, which the
  // next step redraws.
  void print(const std::string& line);
  // Ends the live line (a newline after it); idempotent.
  void finish();

 private:
  std::ostream& log_;
  ProgressMode mode_;
  int64_t log_every_;
  bool live_line_shown_ = false;
};

// The live mode when `log` is std::cout and stdout is a terminal, else Lines; Quiet wins.
ProgressMode choose_progress_mode(const std::ostream& log, bool quiet);

// What the summary table at the end of a run shows.
struct RunReport {
  double wall_seconds = 0;
  int64_t steps = 0, total_steps = 0, tokens = 0;
  struct Eval {
    std::string when;
    int64_t step = 0;
    double loss = 0, accuracy = 0;
  };
  std::optional<Eval> best_eval, final_eval;  // best: lowest held-out loss
  MemorySample peak_memory;                    // in_use fields unused
  std::string adapter_dir, metrics_file, plots_dir, run_config;  // empty: not written
  std::string forgetting;  // --general-eval's verdict (evaluate.h forgetting_line); empty: none
};

// Keeps the best (lowest loss) and the last of the evaluations it is shown.
void note_eval(RunReport& report, const std::string& when, int64_t step, double loss,
               double accuracy);

// A two-column table, one "name  value" row per line, e.g. "best eval  loss 1.2345
// (perplexity 3.44, accuracy 61.2%) at step 200"; rows for paths not written are left out.
std::string format_summary_table(const RunReport& report);

}  // namespace train
