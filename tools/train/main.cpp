// train70b: QLoRA fine-tuning from the command line. See --help, docs/train70b.md.
#include <cstdio>
#include <exception>
#include <iostream>

#include <string_view>

#include "engine/nvtx.h"
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
};

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2)
    for (const Subcommand& sub : kSubcommands)
      if (argv[1] == sub.name) return sub.run(argc - 1, argv + 1);
  int exit_code = 0;
  auto options = train::parse_options(argc, argv, &exit_code);
  if (!options) return exit_code;
  try {
    engine::nvtx_name_thread("train70b");
    train::run_training(*options, std::cout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train70b: %s\n", e.what());
    return 1;
  }
}
