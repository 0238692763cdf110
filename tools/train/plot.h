// Charts of a run from its metrics.jsonl (svg_chart.h): written at the end of a run and by
// `train70b plot RUN_DIR` at any time, also while the run writes metrics.jsonl.partial.
//
//   loss.svg               train loss per step, its EMA, and every held-out evaluation
//   learning_rate.svg      lr per step
//   grad_norm.svg          global gradient norm before clipping (log axis when it spans
//                          more than two decades)
//   tokens_per_second.svg  throughput: each step's own rate and the run's average since
//                          its start (evaluations and saves included)
//   memory.svg             device and host memory, when the train lines carry them (MiB,
//                          or GiB once a value reaches 1 GiB)
//
// Non-finite values (written as null) are gaps; a last line without its newline (the
// run is writing it) is left out; any other line that is not a JSON object is an error
// naming the file and line.
#pragma once
#include <string>
#include <vector>

namespace train {

struct PlotOptions {
  bool log_loss = false;  // loss chart on a log axis
};

// The metrics file of a run directory: the live metrics.jsonl.partial of a run writing into
// it (run_output.h), else metrics.jsonl, else metrics.jsonl.partial; a path to a file is
// used as it is. Throws InputError naming RUN_DIR when neither exists.
std::string find_metrics_file(const std::string& run_dir);

// Writes the charts into `out_dir` (created; each file replaced atomically) and returns
// the paths written.
std::vector<std::string> write_plots(const std::string& metrics_file, const std::string& out_dir,
                                     const PlotOptions& options = {});

// `train70b plot RUN_DIR [--output DIR] [--log-loss]`.
int plot_main(int argc, char** argv);

}  // namespace train
