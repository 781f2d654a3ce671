#!/usr/bin/env bash
# Configure and build cnf (Release) in build/ after making sure its
# dependencies are installed. The build tree is the one tests and benchmarks
# run, so it is tuned for this machine (-march=native; CNF_NATIVE=OFF in the
# environment turns that off); a build for installation leaves it off.
# Prints nothing but errors unless VERBOSE=1.
#   tools/build.sh [--sanitize]   --sanitize: AddressSanitizer and
#                                 UndefinedBehaviorSanitizer (CMake option
#                                 CNF_SANITIZE, RelWithDebInfo) in build-sanitize/
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/deps.sh"
flags=(-DCMAKE_BUILD_TYPE=Release -DCNF_SANITIZE=OFF)
build=${CNF_BUILD_DIR:-$root/build}
if [ "${1:-}" = --sanitize ]; then
    flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCNF_SANITIZE=ON)
    build=${CNF_BUILD_DIR:-$root/build-sanitize}
elif [ $# -gt 0 ]; then
    echo "build.sh: unknown argument '$1' (only --sanitize)" >&2
    exit 2
fi
mkdir -p "$build"
cmake -S "$root" -B "$build" "${flags[@]}" -DCNF_NATIVE="${CNF_NATIVE:-ON}" >"$build.log" 2>&1 \
    || { cat "$build.log" >&2; exit 1; }
cmake --build "$build" -j "$(nproc)" >>"$build.log" 2>&1 \
    || { tail -n 60 "$build.log" >&2; exit 1; }
