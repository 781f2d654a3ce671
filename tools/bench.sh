#!/usr/bin/env bash
# Build cnf (tools/build.sh, Release) and run the benchmark suite of issue 6,
# printing one JSON line per case on stdout (and into the results file).
#
# Usage: tools/bench.sh [--quick] [--no-build] [--threads N] [--out FILE] [CASE ...]
#
#   --quick      small runs (a smoke test of the whole suite, ~10 s); the
#                figures are then meaningless
#   --no-build   use the existing build
#   --threads N  OpenBLAS threads (--blas-threads N) for every case but the
#                2-thread ones (default 1, as the cnf command runs it: the
#                toy matrices are too small for BLAS threads to pay; cnf's
#                own batch-splitting threads are measured by case train2)
#   --out FILE   also append the JSON lines to FILE (default
#                $CNF_BUILD_DIR/bench-results.jsonl)
#   CASE         any of the cases below, in order (default: all of them):
#     machine    cores, CPU model, OpenBLAS core type and configuration,
#                thread setting, git commit
#     train      toy configuration on 8-gaussians (bench_train): training
#                time per iteration (median, mean, p90 over windows 1-100,
#                501-600 and 1901-2000) and NFE, with T learned and T fixed
#                at 0.5; time to test NLL 2.95 (5000 held-out points, exact
#                divergence, every 100 iterations, evaluations excluded, cap
#                4000) and the test NLL at 2000 iterations
#     train2     case train again with 2 cnf threads (bench_train --threads 2:
#                each network pass splits the batch rows over 2 threads;
#                OpenBLAS stays at 1 thread), T learned and T fixed
#     grad       one training gradient at a fixed state, repeated 200 times
#                (bench_grad, on the model case train saved): minimum, p10
#                and median milliseconds, 1 and 2 threads, cold and warm
#                first steps; identical work per repetition, so the
#                minimum is the steadiest figure for comparing builds
#     loglik     log-likelihood throughput, batch 1000 (bench_loglik): D = 2
#                untrained and trained (the model case train saved, if any),
#                D = 16 tabular with Hutchinson (and exact) divergence; then
#                again with 2 cnf threads (exact D = 16 left out)
#     net        network GFLOP/s against cblas_dgemm on the same shapes (bench_net)
#     memory     peak resident memory of training at batch 100, 1000, 10000,
#                each in its own process (bench_memory)
#     gradacc    the training gradient's error against a 1e-12 reference and
#                its evaluations, every adjoint variant, rtol 1e-3 .. 1e-8
#                (bench/grad_accuracy.sh: trains its four models once into
#                $CNF_BUILD_DIR/grad-models, a few minutes; not in the
#                default list)
#
# Environment: CNF_BUILD_DIR (default build/) as for tools/build.sh.
# Every program is seeded: the NLLs and NFEs repeat exactly; the times depend
# on the machine and its load (each line carries load1, the 1-minute load
# average, and the CPU times beside the wall-clock times).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${CNF_BUILD_DIR:-$root/build}
quick=0
do_build=1
threads=1
out=""
cases=()
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick=1 ;;
    --no-build) do_build=0 ;;
    --threads) threads=$2; shift ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    machine|train|train2|grad|loglik|net|memory|gradacc) cases+=("$1") ;;
    *) echo "bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ ${#cases[@]} -gt 0 ] || cases=(machine train train2 grad loglik net memory)
[ -n "$out" ] || out=$build/bench-results.jsonl

if [ $do_build = 1 ]; then
    CNF_BUILD_DIR=$build "$root/tools/build.sh"
fi
for p in bench_train bench_grad bench_loglik bench_memory; do
    [ -x "$build/$p" ] || { echo "bench.sh: $build/$p is missing (build first)" >&2; exit 1; }
done
mkdir -p "$(dirname "$out")"
model=$build/bench-toy-model.h5
[ $quick = 0 ] || model=$build/bench-toy-model-quick.h5

# Run a program, passing its JSON lines to stdout and the results file.
# Each program sets OpenBLAS's threads itself (bench_setup: 1, as the cnf
# command does, or --blas-threads N), so the environment is left as the
# user's; run1 keeps OpenBLAS at one thread whatever --threads says.
run() {
    echo "bench.sh: $* --blas-threads $threads" >&2
    "$@" --blas-threads "$threads" | tee -a "$out"
}
run1() {
    echo "bench.sh: $* --blas-threads 1" >&2
    "$@" --blas-threads 1 | tee -a "$out"
}

for c in "${cases[@]}"; do
    case $c in
    machine)
        commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
        dirty=$(git -C "$root" status --porcelain --untracked-files=no -- src include 2>/dev/null \
                | wc -l)
        printf '{"bench":"suite","mode":"%s","commit":"%s","src_modified_files":%s,"date":"%s","nproc":%s}\n' \
            "$(if [ $quick = 1 ]; then echo quick; else echo full; fi)" "$commit" "$dirty" \
            "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" | tee -a "$out"
        run "$build/bench_train" --machine
        ;;
    train)
        if [ $quick = 1 ]; then
            run "$build/bench_train" --quick --eval-every 20 --label learned_T --save "$model"
            run "$build/bench_train" --quick --eval-every 20 --fixed-T --label fixed_T
        else
            run "$build/bench_train" --iters 2000 --cap 4000 --eval-every 100 --n-test 5000 \
                --target 2.95 --nll-at 2000 --windows 1-100,501-600,1901-2000 \
                --label learned_T --save "$model"
            run "$build/bench_train" --iters 2000 --cap 4000 --eval-every 100 --n-test 5000 \
                --target 2.95 --nll-at 2000 --windows 1-100,501-600,1901-2000 \
                --fixed-T --label fixed_T
        fi
        ;;
    train2)
        # cnf's threads, not OpenBLAS's: OpenBLAS stays at one thread
        if [ $quick = 1 ]; then
            run1 "$build/bench_train" --quick --threads 2 \
                --label learned_T_2threads
        else
            for fixed in "" --fixed-T; do
                run1 "$build/bench_train" --iters 2000 --cap 4000 \
                    --eval-every 100 --n-test 5000 --target 2.95 --nll-at 2000 \
                    --windows 1-100,501-600,1901-2000 --threads 2 $fixed \
                    --label "$([ -z "$fixed" ] && echo learned_T || echo fixed_T)_2threads"
            done
        fi
        ;;
    grad)
        if [ ! -f "$model" ]; then
            echo "bench.sh: $model is missing (run case train first); case grad skipped" >&2
        else
            reps=200
            [ $quick = 0 ] || reps=3
            for th in 1 2; do
                for warm in 0 1; do
                    run1 "$build/bench_grad" --model "$model" --reps $reps \
                        --threads $th --warm $warm --label "trained_${th}thread_warm$warm"
                done
            done
        fi
        ;;
    loglik)
        margs=()
        [ -f "$model" ] && margs=(--model "$model")
        if [ $quick = 1 ]; then
            run "$build/bench_loglik" --quick "${margs[@]}"
        else
            run "$build/bench_loglik" --batch 1000 --n 10000 --n16 2000 --reps 3 "${margs[@]}"
            run1 "$build/bench_loglik" --batch 1000 --n 10000 --n16 2000 \
                --reps 3 --threads 2 --no-exact16 "${margs[@]}"
        fi
        ;;
    net)
        if [ -x "$build/bench_net" ]; then
            secs=0.3
            [ $quick = 0 ] || secs=0.02
            run "$build/bench_net" "$secs"
        else
            echo "bench.sh: $build/bench_net is missing; case net skipped" >&2
        fi
        ;;
    gradacc)
        qa=()
        [ $quick = 0 ] || qa=(--quick toy50)
        echo "bench.sh: bench/grad_accuracy.sh ${qa[*]}" >&2
        CNF_BUILD_DIR=$build "$root/bench/grad_accuracy.sh" "${qa[@]}" | tee -a "$out"
        ;;
    memory)
        if [ $quick = 1 ]; then
            run "$build/bench_memory" --quick
        else
            run "$build/bench_memory" --batches 100,1000,10000 --iters 3
        fi
        ;;
    esac
done
