#include "tools/train/dry_run.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

namespace train {

namespace fs = std::filesystem;

int exec_dry_run(char** argv) {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  const fs::path dry = self.parent_path() / kDryRunExecutable;
  if (ec || !fs::exists(dry)) {
    std::fprintf(stderr,
                 "train70b: --dry-run needs the CUDA build of train70b: %s (built beside train70b "
                 "only when CUDA is) is missing\n",
                 dry.c_str());
    return 1;
  }
  ::execv(dry.c_str(), argv);
  std::fprintf(stderr, "train70b: --dry-run: cannot run %s: %s\n", dry.c_str(), std::strerror(errno));
  return 1;
}

engine::GpuSpec dry_run_gpu(const TrainOptions& o) {
  return engine::parse_gpu_spec(o.gpu.empty() ? "a100-80gb" : o.gpu);
}

std::vector<models::Example> dry_run_examples(const TrainOptions& o, const models::LlamaConfig& c,
                                              int64_t count) {
  std::vector<models::Example> out(static_cast<size_t>(count));
  for (size_t i = 0; i < out.size(); ++i) {
    models::Example& e = out[i];
    e.input_ids.resize(static_cast<size_t>(o.max_seq_len));
    for (size_t t = 0; t < e.input_ids.size(); ++t)  // any valid ids: nothing reads them
      e.input_ids[t] = static_cast<int32_t>((i * 7919 + t * 104729) % static_cast<size_t>(c.vocab));
    e.labels = e.input_ids;
  }
  return out;
}

}  // namespace train
