#!/usr/bin/env bash
# The README's test command: install, build everything (CUDA code for sm_80 and
# sm_90 when nvcc is present), run every test. GPU tests skip, saying why, when no
# GPU can be used.
# Then, when the CUDA toolkit is installed, the same GPU tests once more in the SIMT
# emulation build (build-simt, ENGINE_CUDA=SIMT): the kernels' sources run on the CPU
# by the emulator of tests/simt, so they are checked against the CPU reference here
# too (docs/gpu.md says what that proves and what it cannot). That build is fortified
# (_FORTIFY_SOURCE=2, Ubuntu's default) and runs the attention tests as sm_80, sm_86
# and sm_90 (tests/simt/arch.h).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh test
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" "$@"

if command -v nvcc >/dev/null || [ -e /usr/local/cuda/include/cuda_runtime.h ]; then
  # The dry run's exactness test compares emulated runs with the CUDA build's train70b-dry.
  dry=""
  [ -x build/tools/train70b-dry ] && dry="$PWD/build/tools/train70b-dry"
  cmake -S . -B build-simt -DENGINE_CUDA=SIMT -DCMAKE_BUILD_TYPE=Release \
    -DENGINE_DRY_RUN_BINARY="$dry"
  cmake --build build-simt -j"$jobs" --target simt_tests engine_cuda_tests models_cuda_tests \
    tools_cuda_tests
  ctest --test-dir build-simt --output-on-failure -j"$jobs" -L 'gpu|simt' "$@"
else
  echo "test.sh: SIMT emulation stage skipped: no CUDA toolkit headers on this machine"
fi
