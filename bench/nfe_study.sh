#!/usr/bin/env bash
# Fewer evaluations at the same accuracy (issue 6, item 3): train FFJORD's toy
# configuration on 8-gaussians (bench_train) once per variant and print one
# JSON line per variant on stdout.
#
# Variants (lambda = --lambda, default 0.01, RNODE's starting point):
#   baseline   FFJORD's setting: no seminorm, no regularizer, PyTorch's init
#   seminorm   the backward solve's error norm leaves the parameter-gradient
#              quadrature out (Kidger, Chen and Lyons 2021)
#   rnode      kinetic energy lambda ||f||^2 + Jacobian Frobenius
#              lambda ||J||_F^2 in the training loss (Finlay et al. 2020)
#   zero_last  last layer initialised to zero (f = 0 at the start)
#   all        seminorm + rnode + zero_last
#
# Usage: bench/nfe_study.sh [--quick] [--bin PATH] [--jobs N] [--iters N]
#                           [--eval-every E] [--n-test N] [--late a-b]
#                           [--lambda L] [--target NLL] [--raw DIR]
#                           [VARIANT ...] [-- BENCH_TRAIN_ARGS ...]
#
#   --quick         smoke run (60 iterations, 500 test points); figures meaningless
#   --bin PATH      the bench_train program (default $CNF_BUILD_DIR/bench_train,
#                   CNF_BUILD_DIR defaulting to build/; build it first)
#   --jobs N        variants run at once (default 1; the machine has 2 cores
#                   and each run is one thread, so at most 2)
#   --iters N       training iterations (default 2000)
#   --eval-every E  test NLL every E iterations (default 250)
#   --n-test N      held-out points, exact divergence (default 5000)
#   --late a-b      the late NFE/time window (default 1901-2000)
#   --lambda L      lambda_K = lambda_J for rnode and all (default 0.01)
#   --target NLL    report the first evaluated iteration with test NLL <= it
#                   (default 2.95)
#   --raw DIR       keep bench_train's own JSON lines, one file per variant
#   VARIANT         any of the variants above, in order (default: all five)
#   -- ARGS         passed to every bench_train run (e.g. --fixed-T, --seed 2)
#
# Every run is seeded: NFE and NLL repeat exactly whatever the load; times do
# not (each line carries load1 at start and end and CPU time beside wall time;
# quote CPU time when the machine is shared). OPENBLAS_NUM_THREADS=1.
#
# Each line: variant, flags; nfe_fwd_mean / nfe_bwd_mean over all iterations
# and nfe_fwd_late / nfe_bwd_late over the late window; test_nll_1000,
# test_nll_1500, test_nll_<iters> (null when not evaluated there);
# reached_iter (first evaluated iteration with test NLL <= target) and its
# training seconds; train_seconds / train_cpu_seconds (evaluations excluded),
# median ms per iteration over all iterations and over the late window (wall
# and CPU); eval_nfe_last (forward NFE of the last test evaluation, summed over
# its chunks of 1000: the trained model's inference cost); T_final; the curve
# [iteration, test NLL, training seconds].
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${CNF_BUILD_DIR:-$root/build}
bin=$build/bench_train
quick=0 jobs=1 iters=2000 eval_every=250 n_test=5000 late=1901-2000 lambda=0.01
target=2.95 raw=""
variants=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick=1 ;;
    --bin) bin=$2; shift ;;
    --jobs) jobs=$2; shift ;;
    --iters) iters=$2; shift ;;
    --eval-every) eval_every=$2; shift ;;
    --n-test) n_test=$2; shift ;;
    --late) late=$2; shift ;;
    --lambda) lambda=$2; shift ;;
    --target) target=$2; shift ;;
    --raw) raw=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    baseline|seminorm|rnode|zero_last|all) variants+=("$1") ;;
    --) shift; extra=("$@"); break ;;
    *) echo "nfe_study.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ ${#variants[@]} -gt 0 ] || variants=(baseline seminorm rnode zero_last all)
[ -x "$bin" ] || { echo "nfe_study.sh: $bin is missing (build first, or --bin)" >&2; exit 1; }
command -v jq >/dev/null || { echo "nfe_study.sh: needs jq" >&2; exit 1; }
if [ $quick = 1 ]; then
    iters=60 eval_every=20 n_test=500 late=41-60
fi
export OPENBLAS_NUM_THREADS=1

flags_of() {
    case $1 in
    baseline) echo "" ;;
    seminorm) echo "--seminorm" ;;
    rnode) echo "--reg-kinetic $lambda --reg-jacobian $lambda" ;;
    zero_last) echo "--zero-last" ;;
    all) echo "--seminorm --reg-kinetic $lambda --reg-jacobian $lambda --zero-last" ;;
    esac
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -z "$raw" ] || mkdir -p "$raw"

# One variant: bench_train's lines to $tmp/<variant>.jsonl, then one summary line.
run_one() {
    local v=$1 flags load0 load1 t0 t1
    flags=$(flags_of "$v")
    load0=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(date +%s.%N)
    echo "nfe_study.sh: $v: $bin $flags ${extra[*]:-}" >&2
    # shellcheck disable=SC2086
    "$bin" --iters "$iters" --cap "$iters" --eval-every "$eval_every" --n-test "$n_test" \
        --target "$target" --nll-at "$iters" --windows "1-$iters,$late" --label "$v" \
        $flags ${extra[@]+"${extra[@]}"} >"$tmp/$v.jsonl"
    t1=$(date +%s.%N)
    load1=$(cut -d' ' -f1 /proc/loadavg)
    [ -z "$raw" ] || cp "$tmp/$v.jsonl" "$raw/$v.jsonl"
    jq -cs --arg v "$v" --arg flags "$flags" --arg late "$late" --argjson iters "$iters" \
        --argjson l0 "$load0" --argjson l1 "$load1" --argjson wall "$(echo "$t1 - $t0" | bc)" '
        (map(select(.bench == "time_to_nll")) | .[0]) as $t
        | (map(select(.bench == "train_iter" and .window == "1-\($iters)")) | .[0]) as $all
        | (map(select(.bench == "train_iter" and .window == $late)) | .[0]) as $w
        | def nll_at($i): ([$t.curve[] | select(.[0] == $i) | .[1]] | .[0]);
        {bench: "nfe_study", variant: $v, flags: $flags, T: $t.T, seed: $t.seed,
         iters: $t.iters_run, eval_every: $t.eval_every, n_test: $t.n_test,
         nfe_fwd_mean: $t.nfe_fwd_mean, nfe_bwd_mean: $t.nfe_bwd_mean,
         late_window: $late, nfe_fwd_late: $w.nfe_fwd_mean, nfe_bwd_late: $w.nfe_bwd_mean,
         test_nll_init: $t.test_nll_init,
         test_nll_1000: nll_at(1000), test_nll_1500: nll_at(1500),
         ("test_nll_\($iters)"): nll_at($iters),
         target: $t.target, reached_iter: $t.reached_iter,
         reached_train_seconds: $t.train_seconds, reached_train_cpu_seconds: $t.train_cpu_seconds,
         train_seconds: $t.total_train_seconds, train_cpu_seconds: $t.total_train_cpu_seconds,
         ms_per_iter_median: $all.median_ms, cpu_ms_per_iter_median: $all.cpu_median_ms,
         ms_per_iter_late_median: $w.median_ms, cpu_ms_per_iter_late_median: $w.cpu_median_ms,
         eval_seconds: $t.eval_seconds, eval_nfe_last: $t.eval_nfe_last, T_final: $t.T_final,
         run_wall_seconds: $wall, load1_start: $l0, load1_end: $l1,
         blas_threads: $t.blas_threads, blas_core: $t.blas_core, curve: $t.curve}
        ' "$tmp/$v.jsonl" >"$tmp/$v.summary"
}

# At most $jobs runs at once; the lines come out in the order of the variants.
pids=()
for v in "${variants[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n || true
    done
    run_one "$v" &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do
    wait "$p" || status=1
done
for v in "${variants[@]}"; do
    if [ -s "$tmp/$v.summary" ]; then
        cat "$tmp/$v.summary"
    else
        echo "nfe_study.sh: variant $v failed" >&2
        status=1
    fi
done
exit $status
