// A run's output directory changes as a whole. The adapter, metrics.jsonl, run_config.json
// and data_report.json of a run are written into a staging directory beside the output,
//   <parent>/.<name>.train70b-staging.<pid>/
// and swapped in at the end with one renameat2(RENAME_EXCHANGE) (two renames where the
// file system lacks it, with recovery below); the old output is then removed. So a reader
// sees the old run's files or the new run's, never a mix. Checkpoints live in
// OUTPUT/checkpoints/ (tools/train/checkpoint.h) and are carried over by the swap.
//
// Every output directory holds a marker file, .train70b-output: an existing non-empty
// directory without it is refused, so --output never replaces files train70b did not write.
#pragma once
#include <filesystem>
#include <ostream>
#include <string>

namespace train {

inline constexpr const char* kOutputMarker = ".train70b-output";

// Refuses (engine::InputError naming --output) an existing output that is not a directory,
// or a non-empty one without the marker.
void check_output_is_ours(const std::filesystem::path& output);

// Removes what runs of this tool killed earlier left behind (only names it makes, only of
// processes no longer alive): staging directories, an old output set aside by an
// interrupted swap (moved back, or its checkpoints recovered), temporaries inside the
// output and in OUTPUT/checkpoints. Says what it did on `log`.
void clean_stale_temporaries(const std::filesystem::path& output, std::ostream& log);

// Creates the output directory with its marker if missing (for checkpoints mid-run).
void ensure_output_dir(const std::filesystem::path& output);

// The live metrics of a run in progress into `output` (its staging directory's
// metrics.jsonl.partial), or an empty path when no live run writes there.
std::filesystem::path live_metrics_path(const std::filesystem::path& output);

class StagedOutput {
 public:
  // Creates the staging directory (with the marker) beside `output`.
  explicit StagedOutput(const std::filesystem::path& output);
  // Removes the staging directory unless published; never throws.
  ~StagedOutput();
  StagedOutput(const StagedOutput&) = delete;
  StagedOutput& operator=(const StagedOutput&) = delete;

  const std::filesystem::path& dir() const { return staging_; }
  const std::filesystem::path& output() const { return output_; }
  // Swaps the staging directory in as the output (fsyncing files and directories),
  // carries OUTPUT/checkpoints over and removes the old output.
  void publish();

 private:
  std::filesystem::path output_, staging_;
  bool published_ = false;
};

// fsyncs a directory (best effort), so renames inside it are durable.
void fsync_directory(const std::filesystem::path& dir);
// fsyncs every regular file directly in `dir`, then `dir` itself.
void fsync_tree(const std::filesystem::path& dir);

}  // namespace train
