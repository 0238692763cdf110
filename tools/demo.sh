#!/usr/bin/env bash
# The README's main command: install, build, run the built-in demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh demo
jobs=$(nproc)
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DENGINE_BUILD_TESTS=OFF -DENGINE_BUILD_BENCH=OFF
cmake --build build-demo -j"$jobs" --target engine_demo
./build-demo/tools/engine_demo "$@"
