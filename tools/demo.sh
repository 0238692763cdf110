#!/usr/bin/env bash
# The README's main command: install, build, run train70b's built-in demo (a tiny
# Llama with an NF4 base learns a generated task through LoRA; the held-out loss
# and accuracy are printed before and after, the adapter lands in train70b-demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh demo
jobs=$(nproc)
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DENGINE_BUILD_TESTS=OFF -DENGINE_BUILD_BENCH=OFF
cmake --build build-demo -j"$jobs" --target train70b
./build-demo/tools/train70b --demo --output train70b-demo "$@"
