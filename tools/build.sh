#!/usr/bin/env bash
# Configure and build cnf (Release) in build/ after making sure its
# dependencies are installed. The build tree is the one tests and benchmarks
# run, so it is tuned for this machine (-march=native; CNF_NATIVE=OFF in the
# environment turns that off); a build for installation leaves it off.
# Prints nothing but errors unless VERBOSE=1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/deps.sh"
build=${CNF_BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DCNF_NATIVE="${CNF_NATIVE:-ON}" >"$build.log" 2>&1 \
    || { cat "$build.log" >&2; exit 1; }
cmake --build "$build" -j "$(nproc)" >>"$build.log" 2>&1 \
    || { tail -n 60 "$build.log" >&2; exit 1; }
