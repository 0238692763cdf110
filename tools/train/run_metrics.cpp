// A run's metrics file and the end of its staged output (tools/train/run_metrics.h).
#include "tools/train/run_metrics.h"

#include <cmath>

#include "engine/error.h"
#include "tools/train/plot.h"

namespace fs = std::filesystem;

namespace train {

RunMetrics::RunMetrics(const StagedOutput& staged, const std::string& output)
    : output_(output),
      partial_(staged.dir() / "metrics.jsonl.partial"),
      complete_(staged.dir() / "metrics.jsonl"),
      final_(fs::path(output) / "metrics.jsonl"),
      file_(partial_, std::ios::binary) {
  ENGINE_INPUT_CHECK(file_.good(), partial_.string(), ": cannot open for writing");
}

void RunMetrics::write(const nlohmann::json& line) { file_ << line.dump() << "\n" << std::flush; }

void RunMetrics::write_raw(const std::string& lines) { file_ << lines << std::flush; }

void RunMetrics::complete() {
  file_.close();
  fs::rename(partial_, complete_);
}

void write_eval_event(RunMetrics& metrics, const char* when, int64_t step, const EvalResult& r, const char* split) {
  metrics.write({{"event", "eval"}, {"split", split}, {"when", when}, {"step", step}, {"loss", r.loss},
                 {"perplexity", std::exp(r.loss)}, {"accuracy", r.accuracy}, {"tokens", r.tokens}});
}

std::string write_forgetting(RunMetrics& metrics, const EvalResult& before, const EvalResult& after,
                             double threshold, bool* forgetting) {
  const std::string verdict = forgetting_line(before, after, threshold, forgetting);
  metrics.write({{"event", "forgetting"}, {"perplexity_before", std::exp(before.loss)},
                 {"perplexity_after", std::exp(after.loss)}, {"threshold", threshold}, {"forgetting", *forgetting},
                 {"summary", verdict}});
  return verdict;
}

void add_device_memory(nlohmann::json& line, const MemorySample& memory) {
  if (!memory.gpu) return;
  line["device_memory_bytes"] = memory.device_in_use;
  line["device_memory_peak_bytes"] = memory.device_peak;
}

void stop_run(StagedOutput& staged, RunMetrics& metrics, int64_t step, const std::string& reason,
              const std::string& more) {
  metrics.write({{"event", "stopped"}, {"step", step}, {"reason", reason}});
  metrics.complete();  // the record of why, complete
  staged.publish();
  throw engine::Error(reason + "; metrics in " + metrics.final_path().string() + more);
}

std::string publish_run(StagedOutput& staged, RunMetrics& metrics, bool adapter_written, std::ostream& log) {
  metrics.complete();
  std::string plots;
  try {  // charts are worth a warning, not the run
    write_plots((staged.dir() / "metrics.jsonl").string(), (staged.dir() / "plots").string());
    plots = (fs::path(metrics.output()) / "plots").string();
  } catch (const std::exception& e) {
    log << "warning: no plots: " << e.what() << "\n";
  }
  staged.publish();
  if (adapter_written)
    log << "adapter written to " << metrics.output()
        << " (adapter_config.json, adapter_model.safetensors), metrics in " << metrics.final_path().string() << "\n";
  return plots;
}

}  // namespace train
