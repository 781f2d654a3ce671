#!/usr/bin/env bash
# Flow matching against maximum likelihood, as a user runs them (the `cnf`
# command, default thread settings unless a case says otherwise), printing
# one JSON line per run on stdout. The figures behind the README's "Which
# objective" table and flows/README.md.
#
# Usage: bench/fm_study.sh [--build DIR] [--data DIR] [--seeds "1 2 3"] CASE ...
#   --build DIR  the build holding cnf and bench_fm (default build/)
#   --data DIR   where letter.h5, digits8x8_logit.h5 and penguins.h5 are
#                (needed by the tabular case only)
#   CASE:
#     iter     the gradient of one iteration, fm against mle at the same
#              network and batch (bench_fm): the toy network at batch 256
#              and the tabular one at D = 16, batch 1000; 1 and 2 threads
#     toy      8gaussians (cnf toy --n 20000 --seed 1): flows/toy2d.cfg for
#              1100 iterations (where maximum likelihood first reaches a
#              test NLL of 2.95), flows/toy2d-fm.cfg as fm and as otfm, and
#              500 maximum-likelihood iterations of toy2d.cfg from the fm
#              model (--init); per seed: training seconds (the JSON's, the
#              same thread count for all), exact test NLL and the
#              evaluation's function evaluations (NFE)
#     tabular  flows/tabular-fm.cfg on letter, digits and penguins at
#              --threads 2, fm and otfm and standardize against whiten on
#              letter: training seconds, exact test NLL (Hutchinson's with
#              --hutch for D > 16), evaluation NFE. Long: about an hour.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
data=""
seeds="1 2 3"
cases=()
while [ $# -gt 0 ]; do
    case "$1" in
    --build) build=$(cd "$2" && pwd); shift ;;
    --data) data=$(cd "$2" && pwd); shift ;;
    --seeds) seeds=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    iter|toy|tabular) cases+=("$1") ;;
    *) echo "fm_study.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ ${#cases[@]} -gt 0 ] || { echo "fm_study.sh: name a case (iter, toy, tabular)" >&2; exit 2; }
cnf=$build/cnf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

json_get() { # json_get KEY JSON -> the value (number, string or null)
    python3 -c 'import json, sys; v = json.loads(sys.argv[2]).get(sys.argv[1]); print("null" if v is None else v)' "$1" "$2"
}

# run LABEL DATA EVAL_DIV THREADS TRAIN-ARGS...: train, evaluate /test, print a line.
run() {
    local label=$1 file=$2 div=$3 threads=$4
    shift 4
    local tj ej
    tj=$("$cnf" train --data "$file" --threads "$threads" --out "$tmp/m.h5" --json --quiet "$@")
    ej=$("$cnf" eval --model "$tmp/m.h5" --data "$file:/test" --divergence "$div" \
        --threads "$threads" --json --quiet)
    printf '{"case":"%s","threads":%s,"train_seconds":%s,"iters":%s,"best_iteration":%s,' \
        "$label" "$threads" "$(json_get seconds "$tj")" "$(json_get iters "$tj")" \
        "$(json_get best_iteration "$tj")"
    printf '"test_nll":%s,"test_nll_se":%s,"eval_nfe":%s,"eval_seconds":%s,"args":"%s"}\n' \
        "$(json_get nll "$ej")" "$(json_get nll_se "$ej")" "$(json_get nfe "$ej")" \
        "$(json_get seconds "$ej")" "$*"
    cp "$tmp/m.h5" "$tmp/$label.h5"
}

for c in "${cases[@]}"; do
    case "$c" in
    iter)
        for t in 1 2; do
            "$build/bench_fm" --dim 2 --hidden 64-64-64 --layer concatsquash --act tanh \
                --batch 256 --threads $t --reps 50 --label toy | grep -v '"machine"'
            "$build/bench_fm" --dim 16 --hidden 256-256-256 --layer concat --act swish \
                --batch 1000 --threads $t --reps 20 --divergence gaussian --label tabular \
                | grep -v '"machine"'
        done
        ;;
    toy)
        "$cnf" toy 8gaussians --n 20000 --seed 1 --out "$tmp/toy.h5" --quiet
        for s in $seeds; do
            run "toy_mle1100_s$s" "$tmp/toy.h5" exact 1 --flow "$root/flows/toy2d.cfg" \
                --iters 1100 --seed "$s"
            run "toy_fm_s$s" "$tmp/toy.h5" exact 1 --flow "$root/flows/toy2d-fm.cfg" --seed "$s"
            cp "$tmp/toy_fm_s$s.h5" "$tmp/fm_init.h5"
            run "toy_otfm_s$s" "$tmp/toy.h5" exact 1 --flow "$root/flows/toy2d-fm.cfg" \
                --objective otfm --seed "$s"
            run "toy_fm_then_mle500_s$s" "$tmp/toy.h5" exact 1 --flow "$root/flows/toy2d.cfg" \
                --init "$tmp/fm_init.h5" --iters 500 --seed "$s"
        done
        ;;
    tabular)
        [ -n "$data" ] || { echo "fm_study.sh: the tabular case needs --data DIR" >&2; exit 2; }
        pre="$root/flows/tabular-fm.cfg"
        run letter_fm "$data/letter.h5" exact 2 --flow "$pre"
        run letter_otfm "$data/letter.h5" exact 2 --flow "$pre" --objective otfm
        run letter_fm_standardize "$data/letter.h5" exact 2 --flow "$pre" --preprocess standardize
        run digits_fm "$data/digits8x8_logit.h5" exact 2 --flow "$pre"
        run penguins_fm "$data/penguins.h5" exact 2 --flow "$pre"
        ;;
    esac
done
