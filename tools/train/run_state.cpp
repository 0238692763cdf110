// Resumable training loops (tools/train/run_state.h).
#include "tools/train/run_state.h"

#include <algorithm>
#include <numeric>

#include "engine/error.h"
#include "tools/train/run_output.h"

namespace train {

namespace fs = std::filesystem;

fs::path prepare_output(const TrainOptions& o, std::ostream& log) {
  check_output_writable(o.output);
  check_output_is_ours(o.output);
  clean_stale_temporaries(o.output, log);
  return resume_point(o.resume, o.output);
}

TrainProgress resume_from(const fs::path& dir, const nlohmann::json& identity, models::LlamaModel& model,
                          engine::optim::Optimizer& optimizer, int64_t train_units, int64_t total_steps,
                          RunMetrics& metrics, std::ostream& log) {
  std::string metrics_so_far;
  CheckpointData checkpoint = load_checkpoint(dir, identity, model, &metrics_so_far);
  check_resume_position(checkpoint.progress, train_units, total_steps, dir);
  optimizer.load_state(checkpoint.optimizer);
  metrics.write_raw(metrics_so_far);
  metrics.write({{"event", "resumed"}, {"step", checkpoint.progress.step}, {"checkpoint", dir.string()}});
  log << "resumed from " << dir.string() << " after step " << checkpoint.progress.step << "/" << total_steps << "\n";
  return std::move(checkpoint.progress);
}

ResumableRun::ResumableRun(const TrainOptions& options, TrainProgress& progress, int64_t train_units,
                           int64_t total_steps)
    : o_(options),
      p_(progress),
      units_(train_units),
      total_steps_(total_steps),
      shuffle_(options.seed + 2),
      start_(std::chrono::steady_clock::now() - std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                    std::chrono::duration<double>(progress.train_seconds))) {
  shuffle_.advance(progress.shuffle_offset);
}

std::vector<int64_t> ResumableRun::next_indices(int64_t n) {
  std::vector<int64_t> idx;
  while (static_cast<int64_t>(idx.size()) < n) {
    if (p_.cursor == static_cast<int64_t>(p_.order.size())) {  // a new epoch
      const std::vector<float> keys = engine::uniform({units_}, 0, 1, shuffle_).to_floats();
      p_.order.resize(static_cast<size_t>(units_));
      std::iota(p_.order.begin(), p_.order.end(), 0);
      std::sort(p_.order.begin(), p_.order.end(), [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
      p_.cursor = 0;
    }
    idx.push_back(p_.order[static_cast<size_t>(p_.cursor++)]);
  }
  return idx;
}

double ResumableRun::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ResumableRun::save_if_due(int64_t done, const CheckpointContent& c, RunMetrics& metrics,
                               const std::function<void(const std::string&)>& say) {
  const bool stopping = stop_.requested();
  if (!stopping && !(o_.save_every > 0 && done % o_.save_every == 0)) return;
  metrics.flush();
  p_.shuffle_offset = shuffle_.offset();
  p_.train_seconds = seconds();
  const fs::path saved = save_checkpoint(o_.output, {p_, c.identity, c.run_config, c.optimizer.state()}, c.model,
                                         c.lora, c.base_name, metrics.partial_path(), o_.save_total_limit);
  metrics.write({{"event", "checkpoint"}, {"step", done}, {"path", saved.string()}});
  say("checkpoint after step " + std::to_string(done) + " saved in " + saved.string());
  if (stopping)
    throw engine::Error("stopped by " + std::string(stop_.name()) + " after step " + std::to_string(done) + "/" +
                        std::to_string(total_steps_) + "; checkpoint saved in " + saved.string() +
                        "; continue with --resume latest");
}

}  // namespace train
