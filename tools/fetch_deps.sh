#!/usr/bin/env bash
# Downloads (does not install) the Debian 12 packages the build needs into .deps/debs
# (git-ignored), for a machine that has CUDA but neither these packages nor a network:
# tools/gpu_check.sh unpacks them there into .deps/prefix. Run this on a Debian 12
# (bookworm) amd64 machine with network access; it needs no root.
#   tools/fetch_deps.sh            # then carry .deps/debs to the GPU machine
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/.deps/debs

# Headers, CMake package configs and the libraries they point at. libgtest-dev's
# GTestTargets.cmake also names libgmock*.a (libgmock-dev); libpcre2-dev's unversioned
# .so links point into all of the libpcre2 runtime packages.
packages=(
  libgtest-dev libgmock-dev googletest
  libbenchmark-dev libbenchmark1debian
  nlohmann-json3-dev libcli11-dev
  libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
  libsentencepiece-dev libsentencepiece0
)

if [ -r /etc/os-release ]; then
  . /etc/os-release
  if [ "${ID:-}" != debian ] || [ "${VERSION_ID:-}" != 12 ]; then
    echo "fetch_deps: warning: this is ${PRETTY_NAME:-an unknown system}, not Debian 12;" \
         "the packages may not match what gpu_check.sh expects" >&2
  fi
fi
arch=$(dpkg --print-architecture)
[ "$arch" = amd64 ] || { echo "fetch_deps: the GPU machine is amd64, this is $arch" >&2; exit 1; }

mkdir -p "$dest"
rm -f "$dest"/*.deb  # one version of each package, no stale leftovers
cd "$dest"
if ! apt-get download "${packages[@]}"; then
  echo "fetch_deps: apt-get download failed; run 'apt-get update' (as root) and retry" >&2
  exit 1
fi
echo "fetch_deps: $(ls -1 "$dest"/*.deb | wc -l) packages, $(du -sh "$dest" | cut -f1), in $dest:"
ls -1 "$dest"
