#!/usr/bin/env bash
# The training gradient's accuracy against its cost (issue 14): train the
# models once (kept in --dir), then run bench_grad_accuracy on each and print
# its JSON lines (stdout) and the tables (stderr, via grad_accuracy_table.py).
#
# Models (all seed 1; data cnf toy 8gaussians --n 20000 --seed 1):
#   toy50, toy1000, toy2000   cnf train --flow flows/toy2d.cfg --iters N
#                             (the saved model is the best validated one: the
#                             2000-iteration run keeps iteration 1400's)
#   letter400                 cnf train --data datasets/letter.h5
#                             --flow flows/tabular.cfg --iters 400 (D = 16,
#                             Gaussian Hutchinson; a briefly trained model)
# Cases: the toy models at rtol = atol = 1e-3 .. 1e-8 with the exact
# divergence; letter400 at rtol = atol = 1e-3 .. 1e-8 and at the tabular
# preset's rtol 1e-6, atol 1e-8 (--atol-ratio 0.01), Gaussian noise. A fixed
# batch: the first 100 training rows. Reference: 1e-12.
#
# Usage: bench/grad_accuracy.sh [--dir DIR] [--reps N] [--quick] [MODEL ...]
#   --dir DIR   where the models live (default $CNF_BUILD_DIR/grad-models;
#               training them takes a few minutes, once)
#   --reps N    timed repetitions per case (default 3; the time is the median)
#   --quick     two tolerances, one repetition (a smoke run)
#   MODEL       any of toy50 toy1000 toy2000 letter400 (default: all)
# Evaluation counts and errors repeat exactly; times depend on the load.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${CNF_BUILD_DIR:-$root/build}
dir=$build/grad-models
reps=3
tols=1e-3,1e-4,1e-5,1e-6,1e-7,1e-8
models=()
while [ $# -gt 0 ]; do
    case "$1" in
    --dir) dir=$2; shift ;;
    --reps) reps=$2; shift ;;
    --quick) tols=1e-5,1e-7; reps=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    toy50|toy1000|toy2000|letter400) models+=("$1") ;;
    *) echo "grad_accuracy.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ ${#models[@]} -gt 0 ] || models=(toy50 toy1000 toy2000 letter400)
for p in cnf bench_grad_accuracy; do
    [ -x "$build/$p" ] || { echo "grad_accuracy.sh: $build/$p is missing (build first)" >&2; exit 1; }
done
mkdir -p "$dir"
export OPENBLAS_NUM_THREADS=1
[ -f "$dir/toy.h5" ] || "$build/cnf" toy 8gaussians --n 20000 --seed 1 --out "$dir/toy.h5" --quiet
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for m in "${models[@]}"; do
    if [ ! -f "$dir/$m.h5" ]; then
        echo "grad_accuracy.sh: training $m (once)" >&2
        case $m in
        toy*) "$build/cnf" train --data "$dir/toy.h5" --flow "$root/flows/toy2d.cfg" \
                  --iters "${m#toy}" --seed 1 --out "$dir/$m.h5" --quiet ;;
        letter400) "$build/cnf" train --data "$root/datasets/letter.h5" \
                  --flow "$root/flows/tabular.cfg" --iters 400 --seed 1 --out "$dir/$m.h5" --quiet ;;
        esac
    fi
    case $m in
    toy*) "$build/bench_grad_accuracy" --model "$dir/$m.h5" --data "$dir/toy.h5" --tols "$tols" \
              --reps "$reps" --label "$m" | tee -a "$out" ;;
    letter400)
        for ratio in 1 0.01; do
            "$build/bench_grad_accuracy" --model "$dir/$m.h5" --data "$root/datasets/letter.h5" \
                --divergence gaussian --tols "$tols" --atol-ratio $ratio --reps "$reps" \
                --label "$m-atol$ratio" | tee -a "$out"
        done ;;
    esac
done
python3 "$root/bench/grad_accuracy_table.py" "$out" >&2
