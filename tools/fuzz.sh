#!/usr/bin/env bash
# Run the libFuzzer targets of fuzz/ (the model loader, the data reader and
# the preset parser) for a given time, all at once under nice -n 19, and say
# how many inputs each ran and what it found. Not part of ctest.
#
#   tools/fuzz.sh [SECONDS] [TARGET...]     (default 600 s, all three targets:
#                                            fuzz_model fuzz_data fuzz_preset)
#
# Builds into build-fuzz/ with clang (CMake option CNF_FUZZ: ASan + UBSan +
# libFuzzer). Each target starts from its seed corpus fuzz/corpus/NAME and
# keeps what it learns in build-fuzz/corpus/NAME (the committed seeds are
# never changed); a crashing, leaking, slow (> 20 s) or memory-hungry
# (> 1 GB in one allocation, > 2 GB resident) input is saved in
# build-fuzz/artifacts/NAME/. To reproduce one: build-fuzz/NAME FILE.
# Exit status: 0 if no target found anything, 1 otherwise.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_model fuzz_data fuzz_preset)
case $secs in ''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, got '$secs'" >&2; exit 2;; esac
command -v clang >/dev/null || {
    echo "fuzz.sh: needs clang and its runtime (apt-get install clang libclang-rt-14-dev)" >&2
    exit 2
}
build=${CNF_FUZZ_BUILD_DIR:-$root/build-fuzz}
mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCNF_FUZZ=ON -DCNF_NATIVE=OFF \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1 \
    || { cat "$build/configure.log" >&2; exit 1; }
cmake --build "$build" -j2 --target "${targets[@]}" >"$build/build.log" 2>&1 \
    || { tail -n 40 "$build/build.log" >&2; exit 1; }

# HDF5 1.10 leaks a little on some damaged files' error paths; the leaks
# of our own code are still reported.
# (a copy: a checkout that changes fuzz/ during the run must not take it away)
cp "$root/fuzz/lsan.supp" "$build/lsan.supp"
export LSAN_OPTIONS=suppressions=$build/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}
# the targets' input files (fuzz/fuzz_file.c), removed at the end: a child
# killed mid-run leaves its own behind
export CNF_FUZZ_TMPDIR=$build/inputs
rm -rf "$CNF_FUZZ_TMPDIR"
mkdir -p "$CNF_FUZZ_TMPDIR"
trap 'rm -rf "$CNF_FUZZ_TMPDIR"' EXIT
declare -A seeds=([fuzz_model]=model [fuzz_data]=data [fuzz_preset]=preset)
pids=()
for t in "${targets[@]}"; do
    seed=${seeds[$t]:-}
    [ -n "$seed" ] || { echo "fuzz.sh: unknown target '$t'" >&2; exit 2; }
    mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
    cp -n "$root/fuzz/corpus/$seed/"* "$build/corpus/$t/"
    # -fork keeps going after a finding and counts them; each child's
    # limits are the acceptance limits of the hostile-file tests.
    nice -n 19 "$build/$t" -max_total_time="$secs" -timeout=20 -malloc_limit_mb=1024 \
        -rss_limit_mb=2048 -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -print_final_stats=1 -artifact_prefix="$build/artifacts/$t/" "$build/corpus/$t" \
        >"$build/$t.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done

found=0
for t in "${targets[@]}"; do
    # -fork reports "#N: cov: ... exec/s: ..." lines whose N counts the runs
    runs=$(grep -o '^#[0-9]*' "$build/$t.log" | tail -n 1 | tr -d '#')
    counts=$(grep -o 'oom/timeout/crash: [0-9/]*' "$build/$t.log" | tail -n 1 | cut -d' ' -f2)
    n_art=$(find "$build/artifacts/$t" -type f | wc -l)
    printf '%-12s %s s  %s executions  out-of-memory/timeouts/crashes %s  %s saved input(s) in %s\n' \
        "$t" "$secs" "${runs:-?}" "${counts:-?}" "$n_art" "$build/artifacts/$t"
    [ "$n_art" -eq 0 ] || found=1
done
exit $found
