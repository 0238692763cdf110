// train70b: QLoRA fine-tuning from the command line. See --help, docs/train70b.md.
#include <cstdio>
#include <exception>
#include <iostream>

#include "engine/nvtx.h"
#include "tools/train/trainer.h"

int main(int argc, char** argv) {
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
