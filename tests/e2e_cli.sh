#!/usr/bin/env bash
# End-to-end test of the `cnf` command: convert -> toy -> train (tiny net) ->
# resume -> eval -> sample -> info -> grad --check -> plot, plus --help of
# every subcommand. Usage: bash tests/e2e_cli.sh BUILD_DIR (holding `cnf`).
source "$(dirname "$0")/e2e_lib.bash"

# --help, --version
"$cnf" --help | has "convert" || fail "cnf --help lists no subcommands"
"$cnf" --version | has "^cnf " || fail "cnf --version"
for c in toy train eval sample grad info plot convert; do
    out=$("$cnf" "$c" --help) || fail "cnf $c --help exited non-zero"
    grep -q -- "--quiet" <<<"$out" || fail "cnf $c --help does not list --quiet"
    grep -q "default" <<<"$out" || fail "cnf $c --help lists no defaults"
done
# (captured first: grep -q closing the pipe early would SIGPIPE cnf under pipefail)
h=$("$cnf" train --flow "$root/flows/toy2d.cfg" --help)
grep -q -- "--end-time T .*also --T (default: 0.5)" <<<"$h" \
    || fail "--help with --flow does not show the preset's values"

# convert: a CSV with a header, 2 columns, 300 rows.
awk 'BEGIN { srand(7); print "x,y";
             for (i = 0; i < 300; i++) printf "%.6f,%.6f\n", rand() * 2 - 1, rand() + 0.5 * i / 300 }' \
    > data.csv
"$cnf" convert data.csv --out csv.h5 --split 0.6,0.2,0.2 --seed 3 --quiet
h5ls csv.h5/train | has "{180, 2}" || fail "convert: /train is not 180 x 2"
h5ls csv.h5/val | has "{60, 2}" || fail "convert: /val is not 60 x 2"
h5ls csv.h5/test | has "{60, 2}" || fail "convert: /test is not 60 x 2"

# toy
"$cnf" toy 8gaussians --n 1000 --seed 2 --out toy.h5 --quiet
h5ls toy.h5/train | has "{800, 2}" || fail "toy: /train is not 800 x 2"
"$cnf" toy 8gaussians --n 1000 --seed 2 --out toy2.h5 --quiet
cmp <(h5dump -m '%.17g' -d /train toy.h5 | tail -n +2) <(h5dump -m '%.17g' -d /train toy2.h5 | tail -n +2) \
    || fail "toy: the same seed gives different data"

# train: a tiny net from the toy preset with overrides, a few iterations.
tiny=(--flow "$root/flows/toy2d.cfg" --hidden 8-8 --batch 50 --val-every 5 --quiet)
j=$("$cnf" train --data toy.h5 "${tiny[@]}" --iters 10 --out m10.h5 --json)
for k in iters train_nll val_nll seconds nfe_forward nfe_backward; do
    [ -n "$(json_num "$k" "$j")" ] || fail "train --json lacks $k: $j"
done
[ "$(json_num iters "$j")" = 10 ] || fail "train ran $(json_num iters "$j") iterations, not 10"
# --resume continues the same run: 5 + 5 iterations give the 10-iteration model.
"$cnf" train --data toy.h5 "${tiny[@]}" --iters 5 --out m5.h5
"$cnf" train --data toy.h5 --resume m5.h5 --iters 10 --out m5to10.h5 --quiet
a=$("$cnf" eval --model m10.h5 --data toy.h5 --json)
b=$("$cnf" eval --model m5to10.h5 --data toy.h5 --json)
[ "$(json_num nll "$a")" = "$(json_num nll "$b")" ] \
    || fail "resumed run differs: $(json_num nll "$a") vs $(json_num nll "$b")"
"$cnf" train --train csv.h5:/train --val csv.h5:/val --hidden 4 --iters 3 --batch 20 \
    --val-every 3 --out mcsv.h5 --quiet
# --gradient-tol takes effect: on this untrained net the entrywise tolerance
# lets the gradient's tiny entries err more, so the backward solves take
# fewer steps than under the default (relative; 45 against 33 evaluations
# when written); the record keeps the key, which --resume reads.
adj=(--train csv.h5:/train --hidden 8-8 --iters 2 --batch 20 --val-every 0 --quiet --json)
rel=$("$cnf" train "${adj[@]}" --out mrel.h5)
ent=$("$cnf" train "${adj[@]}" --gradient-tol entrywise --out ment.h5)
[ "$(json_num nfe_backward "$rel")" != "$(json_num nfe_backward "$ent")" ] \
    || fail "--gradient-tol entrywise changed no backward evaluation: $rel / $ent"
"$cnf" info ment.h5 | grep -E "gradient_tol +entrywise" >/dev/null \
    || fail "gradient_tol is not in the record"
# --save-every: the checkpoints go to --out too; the record keeps the key.
"$cnf" train --data toy.h5 "${tiny[@]}" --iters 4 --save-every 2 --out msave.h5
"$cnf" info msave.h5 | grep -E "save_every +2" >/dev/null || fail "save_every is not in the record"
# --max-time: a run capped at 1 s stops by itself, validates its last
# parameters, says so and saves; SIGTERM ends a run as Ctrl-C does (the best
# so far saved, exit 130).
j=$("$cnf" train --data toy.h5 "${tiny[@]}" --iters 1000000 --val-every 100000 --max-time 1s \
    --out mt.h5 --json)
has '"timed_out": true' <<<"$j" || fail "--max-time: $j"
[ "$(json_num best_iteration "$j")" = "$(json_num iters "$j")" ] \
    || fail "--max-time did not validate the last parameters: $j"
"$cnf" info mt.h5 >/dev/null || fail "--max-time: no loadable model"
"$cnf" train --data toy.h5 "${tiny[@]}" --iters 1000000 --val-every 100000 --out term.h5 &
pid=$!
sleep 1
kill -TERM $pid
rc=0
wait $pid || rc=$?
[ "$rc" = 130 ] || fail "SIGTERM: exit status $rc, not 130"
"$cnf" info term.h5 | has "state: iteration" || fail "SIGTERM: the model was not saved"

# Without validation the last parameters are saved, and the message says why.
"$cnf" train --data toy.h5 --hidden 4 --iters 2 --batch 20 --val-every 0 --out mnoval.h5 2>nv.txt
grep -q "no validation" nv.txt || fail "train --val-every 0: message does not say why: $(cat nv.txt)"
grep -q "nan" nv.txt && fail "train --val-every 0 prints a NaN validation: $(cat nv.txt)"

# The same bits whatever OPENBLAS_NUM_THREADS says (cnf keeps OpenBLAS at one
# thread unless --blas-threads): the evaluation of 2000 rows of a trained
# toy flow, whose last digits OpenBLAS's threads changed before (2.9669764761303439
# at 1 thread, ...434 at 2 for this model).
"$cnf" toy 8gaussians --n 20000 --seed 1 --out big.h5 --quiet
"$cnf" train --data big.h5 --flow "$root/flows/toy2d-fm.cfg" --iters 600 --out fm600.h5 --quiet
n1=$(OPENBLAS_NUM_THREADS=1 "$cnf" eval --model fm600.h5 --data big.h5:/test --json --quiet)
for t in 2 unset; do
    if [ $t = unset ]; then
        n2=$(env -u OPENBLAS_NUM_THREADS "$cnf" eval --model fm600.h5 --data big.h5:/test --json --quiet)
    else
        n2=$(OPENBLAS_NUM_THREADS=$t "$cnf" eval --model fm600.h5 --data big.h5:/test --json --quiet)
    fi
    [ "$(json_num nll "$n1")" = "$(json_num nll "$n2")" ] \
        || fail "OPENBLAS_NUM_THREADS=$t changed the NLL: $(json_num nll "$n1") vs $(json_num nll "$n2")"
done

# A default `cnf train` runs OpenBLAS at one thread whatever the environment
# says, so its model is the same bits with and without OPENBLAS_NUM_THREADS=1
# (every data set compared at 17 digits; h5dump's default is 6).
datasets_17() { # datasets_17 FILE -> every data set of FILE, 17 digits
    h5ls -r "$1" | awk '$2 == "Dataset" { print $1 }' | while read -r d; do
        h5dump -m '%.17g' -d "$d" "$1" | sed 1d
    done
}
OPENBLAS_NUM_THREADS=1 "$cnf" train --data big.h5 --iters 60 --val-every 30 --out bt1.h5 --quiet
env -u OPENBLAS_NUM_THREADS "$cnf" train --data big.h5 --iters 60 --val-every 30 --out bt0.h5 --quiet
datasets_17 bt1.h5 > bt1.txt
datasets_17 bt0.h5 > bt0.txt
[ "$(grep -c DATASET bt1.txt)" -ge 10 ] || fail "train: the model has too few data sets to compare"
cmp -s bt1.txt bt0.txt \
    || fail "train without OPENBLAS_NUM_THREADS=1 wrote other bits: $(diff bt1.txt bt0.txt | head -4)"

# eval
e=$("$cnf" eval --model m10.h5 --data toy.h5:/test --json --out ll.h5)
[ "$(json_num n "$e")" = 100 ] || fail "eval n: $e"
for k in nll nll_se bits_per_dim nfe; do
    [ -n "$(json_num "$k" "$e")" ] || fail "eval --json lacks $k: $e"
done
awk -v n="$(json_num nll "$e")" -v b="$(json_num bits_per_dim "$e")" \
    'BEGIN { exit !(b > 0 && (b - n / (2 * log(2)))^2 < 1e-18) }' || fail "bits/dim != nll/(D ln 2): $e"
h5ls ll.h5/loglik | has "{100}" || fail "eval --out: /loglik is not (100)"
# Every file written carries its format name and version.
for fv in "ll.h5 cnf-loglik" "toy.h5 cnf-data" "csv.h5 cnf-data"; do
    set -- $fv
    h5dump -A -a /format "$1" | grep "\"$2\"" >/dev/null || fail "$1 has no format $2"
    h5dump -A -a /version "$1" | grep "(0): 1" >/dev/null || fail "$1 has no version 1"
done
"$cnf" eval --model m10.h5 --data toy.h5 | has "bits/dim" || fail "eval prints no bits/dim"

# sample
"$cnf" sample --model m10.h5 --n 64 --seed 5 --out s.h5 --quiet
h5ls s.h5/samples | has "{64, 2}" || fail "sample: /samples is not 64 x 2"
"$cnf" sample --model m10.h5 --latent s.h5:/samples --out s2.h5 --quiet
h5ls s2.h5/samples | has "{64, 2}" || fail "sample --latent: /samples is not 64 x 2"
h5dump -A -a /format s.h5 | grep '"cnf-samples"' >/dev/null || fail "s.h5 has no format cnf-samples"
h5dump -A -a /version s.h5 | grep "(0): 1" >/dev/null || fail "s.h5 has no version 1"

# info
i=$("$cnf" info m10.h5)
grep -q "dimension D *2" <<<"$i" || fail "info: no dimension"
grep -q "concatsquash layers, tanh, widths 2-8-8-2" <<<"$i" || fail "info: architecture: $i"
grep -q "parameters P *169" <<<"$i" || fail "info: parameter count: $i"
grep -q "preprocessing *standardize, x_std = (x - mean) / scale" <<<"$i" || fail "info: preprocessing: $i"
grep -q "state: iteration 10" <<<"$i" || fail "info: training record: $i"

# grad --check on the small trained model, exact divergence.
g=$("$cnf" grad --model m10.h5 --data toy.h5:/test --check --json --out g.h5)
r=$(json_num check_max_rel_error "$g")
awk -v r="$r" 'BEGIN { exit !(r < 1e-5) }' || fail "grad --check relative error $r >= 1e-5"
h5ls -r g.h5 | has "/blocks/0/layers/2/W .*{2, 8}" || fail "grad file layout"
h5ls -r g.h5 | has "/blocks/0/T " || fail "grad file has no /blocks/0/T"
# an error above --check-tol is exit status 3
rc=0
"$cnf" grad --model m10.h5 --data toy.h5:/test --check --check-tol 1e-14 --quiet >/dev/null || rc=$?
[ "$rc" = 3 ] || fail "grad --check above --check-tol exited $rc, not 3"

# plot
"$cnf" plot --model m10.h5 --data toy.h5:/test --size 48 --out d.png --quiet
[ "$(head -c 8 d.png | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "plot: not a PNG"
ls | has -E '\.(cnf-)?tmp\.' && fail "a temporary file was left behind"
echo "e2e_cli: all passed (grad --check max relative error $r)"
