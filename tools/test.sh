#!/usr/bin/env bash
# Build cnf and run the whole test suite through ctest. Exits non-zero on any
# failure. This is what CI runs (.ci/run).
#   tools/test.sh [--sanitize] [ctest options]
# --sanitize builds into build-sanitize/ with AddressSanitizer (leak
# detection on) and UndefinedBehaviorSanitizer, every finding fatal, and runs
# the same suite there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = --sanitize ]; then
    shift
    build=${CNF_BUILD_DIR:-$root/build-sanitize}
    CNF_BUILD_DIR=$build "$root/tools/build.sh" --sanitize
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}
    # HDF5 1.10 leaks a block on the error path of some damaged files
    # (test_io's flipped-metadata test); cnf's own leaks are still reported.
    export LSAN_OPTIONS=suppressions=$root/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}
else
    build=${CNF_BUILD_DIR:-$root/build}
    CNF_BUILD_DIR=$build "$root/tools/build.sh"
fi
cd "$build"
ctest --output-on-failure -j "$(nproc)" "$@"
