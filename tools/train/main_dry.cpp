// train70b-dry: what `train70b --dry-run ...` runs (tools/train/dry_run.h): the same
// training run, trainer objects and flags, linked with the dry CUDA runtime
// (engine/dry/dry_runtime.h) instead of the real one. Exit code 0 when the run's memory
// fits the budget (--max-gpu-mem, or the --gpu's memory minus the context reserve), 3
// when it does not, 1 on an error.
#include <cstdio>
#include <exception>
#include <iostream>
#include <sstream>

#include "engine/dry/dry_runtime.h"
#include "engine/gpu_spec.h"
#include "engine/nvtx.h"
#include "tools/train/dry_run.h"
#include "tools/train/trainer.h"

int main(int argc, char** argv) {
  int exit_code = 0;
  auto options = train::parse_options(argc, argv, &exit_code);
  if (!options) return exit_code;
  if (!options->dry_run) {
    std::fprintf(stderr, "train70b-dry: runs train70b --dry-run only (add --dry-run, or run train70b)\n");
    return 2;
  }
  try {
    engine::nvtx_name_thread("train70b-dry");
    train::validate(*options);  // --gpu's error names the flag
    engine::dry::configure(train::dry_run_gpu(*options));
    engine::set_dry_run_active(true);
    std::ostringstream discarded;
    std::ostream& log = options->quiet ? discarded : std::cout;
    const train::RunSummary summary = train::run_training(*options, log);
    const engine::dry::Counters c = engine::dry::counters();
    log << "dry run: " << c.launches << " kernel launches, " << c.matmuls << " cuBLASLt matmuls and "
        << c.copies << " copies checked, none executed\n" << std::flush;
    if (!summary.memory_fits) {
      std::fprintf(stderr, "train70b: dry run: the device peak does not fit the budget (%s/memory.json)\n",
                   options->output.c_str());
      return 3;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train70b: %s\n", e.what());
    return 1;
  }
}
