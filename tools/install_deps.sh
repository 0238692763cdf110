#!/usr/bin/env bash
# Installs the Debian 12 packages the project builds with (idempotent: apt-get
# skips what is already installed). Usage: tools/install_deps.sh [demo|test]
#   demo: compiler, CMake, JSON, CLI11, PCRE2, SentencePiece
#   test: also GoogleTest, Google Benchmark and TinyXML-2 (the SVG chart tests)
# The CUDA toolkit is not a Debian package here: when nvcc is on the PATH the CUDA
# backend is built, otherwise the CPU-only build is.
set -euo pipefail
what=${1:-test}
packages=(build-essential cmake pkg-config nlohmann-json3-dev libcli11-dev libpcre2-dev libsentencepiece-dev)
if [ "$what" = test ]; then
  packages+=(libgtest-dev libgmock-dev libbenchmark-dev libtinyxml2-dev)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all packages present"
  exit 0
fi
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
