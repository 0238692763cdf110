#!/usr/bin/env bash
# The README's test command: install, build everything (CUDA code for sm_80 and
# sm_90 when nvcc is present), run every test. GPU tests skip, saying why, when no
# GPU can be used.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh test
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" "$@"
