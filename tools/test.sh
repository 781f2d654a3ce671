#!/usr/bin/env bash
# Build cnf and run the whole test suite through ctest. Exits non-zero on any
# failure. This is what CI runs (.ci/run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${CNF_BUILD_DIR:-$root/build}
mkdir -p "$build"
"$root/tools/build.sh"
cd "$build"
ctest --output-on-failure -j "$(nproc)" "$@"
