// train70b: QLoRA fine-tuning from the command line. See --help, docs/train70b.md.
#include <cstdio>
#include <exception>
#include <iostream>

#include <string_view>

#include "engine/nvtx.h"
#include "tools/train/dry_run.h"
#include "tools/train/eval_command.h"
#include "tools/train/merge.h"
#include "tools/train/plot.h"
#include "tools/train/quantize.h"
#include "tools/train/tokenize.h"
#include "tools/train/trainer.h"

namespace {

// Subcommands: `train70b NAME ...` runs NAME's main with argv from NAME on; anything else
// is a training run.
struct Subcommand {
  std::string_view name;
  int (*run)(int argc, char** argv);
};
constexpr Subcommand kSubcommands[] = {
    {"tokenize", train::tokenize_main},
    {"quantize", train::quantize_main},
    {"merge", train::merge_main},
    {"plot", train::plot_main},
    {"eval", train::eval_main},
};

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2)
    for (const Subcommand& sub : kSubcommands)
      if (argv[1] == sub.name) return sub.run(argc - 1, argv + 1);
  int exit_code = 0;
  auto options = train::parse_options(argc, argv, &exit_code);
  if (!options) return exit_code;
  if (options->dry_run) return train::exec_dry_run(argv);  // as train70b-dry (tools/train/dry_run.h)
  try {
    engine::nvtx_name_thread("train70b");
    // --quiet: the run's log goes nowhere; errors (stderr) and the summary table remain.
    std::ostream discarded(nullptr);  // no buffer: writes are dropped
    const train::RunSummary summary = train::run_training(*options, options->quiet ? discarded : std::cout);
    if (summary.report.total_steps > 0)  // runs that fill the report (SFT)
      std::cout << (options->quiet ? "" : "\n") << train::format_summary_table(summary.report) << std::flush;
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train70b: %s\n", e.what());
    return 1;
  }
}
