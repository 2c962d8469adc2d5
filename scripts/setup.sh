#!/usr/bin/env bash
# Sets up a fresh machine for secdiff: system packages (SEAL's build needs cmake and clang),
# then builds the release binary. `--deps-only` installs the packages and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in cmake clang libclang-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi
[ "${1:-}" = "--deps-only" ] && exit 0

export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
cargo build --release -p cli
echo "setup: built target/release/secdiff"
