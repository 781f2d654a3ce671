#!/usr/bin/env bash
# End-to-end test of flow matching and whitening through the `cnf` command:
# fm and otfm training on a toy set, the model used by eval, sample and info
# as any other; --resume of a flow-matching run through the model file bit
# for bit; --init from a flow-matched model into maximum likelihood; a
# whitened model trained, saved as version 2, evaluated and sampled.
# Usage: bash tests/e2e_fm.sh BUILD_DIR (holding `cnf`).
source "$(dirname "$0")/e2e_lib.bash"

"$cnf" toy 8gaussians --n 2000 --seed 3 --out toy.h5 --quiet
fm=(--flow "$root/flows/toy2d-fm.cfg" --hidden 16-16 --batch 64 --val-every 10 --quiet)

# fm and otfm: the JSON names the objective, training solves nothing, the
# kept model is the best by validation NLL (val_nll_every 20).
for obj in fm otfm; do
    j=$("$cnf" train --data toy.h5 "${fm[@]}" --objective $obj --iters 40 --val-nll-every 20 \
        --out $obj.h5 --json)
    has "\"objective\": \"$obj\"" <<<"$j" || fail "$obj: JSON lacks the objective: $j"
    [ "$(json_num nfe_forward "$j")" = 0 ] || fail "$obj: training solved an ODE: $j"
    [ -n "$(json_num val_loss "$j")" ] || fail "$obj: no validation loss: $j"
    [ "$(json_num best_iteration "$j")" = 20 ] || [ "$(json_num best_iteration "$j")" = 40 ] \
        || fail "$obj: best iteration is not an NLL validation: $j"
    "$cnf" info $obj.h5 | grep -E "objective +$obj" >/dev/null || fail "$obj: not in the record"
    e=$("$cnf" eval --model $obj.h5 --data toy.h5:/test --json)
    [ "$(json_num n "$e")" = 200 ] || fail "$obj: eval: $e"
    "$cnf" sample --model $obj.h5 --n 32 --seed 4 --out s_$obj.h5 --quiet
    h5ls s_$obj.h5/samples | has "{32, 2}" || fail "$obj: sample"
done

# --resume: 20 + 20 iterations give the 40-iteration model (the step
# schedule: the cosine's horizon is --iters, so a resumed run must keep it).
step=(--lr-schedule step --warmup 5 --val-nll-every 20)
"$cnf" train --data toy.h5 "${fm[@]}" "${step[@]}" --objective otfm --iters 40 --out a40.h5
"$cnf" train --data toy.h5 "${fm[@]}" "${step[@]}" --objective otfm --iters 20 --out a20.h5
"$cnf" train --data toy.h5 --resume a20.h5 --iters 40 --out a20to40.h5 --quiet
# (all 17 digits: h5dump prints 6 by default)
h5dump -m '%.17g' -d /training/params a40.h5 | tail -n +2 > p1.txt
h5dump -m '%.17g' -d /training/params a20to40.h5 | tail -n +2 > p2.txt
cmp -s p1.txt p2.txt || fail "a resumed flow-matching run differs from an uninterrupted one"

# --init: maximum likelihood from the flow-matched model (same architecture);
# the record names the source. With a learning rate of 1e-12 one step leaves
# the parameters where they were: the model evaluates as its source does
# (so the parameters, T and the preprocessing were all taken over).
"$cnf" train --data toy.h5 --flow "$root/flows/toy2d.cfg" --hidden 16-16 --batch 64 \
    --init fm.h5 --iters 5 --val-every 5 --out ft.h5 --quiet
"$cnf" info ft.h5 | grep -E "init +fm.h5" >/dev/null || fail "--init is not in the record"
"$cnf" info ft.h5 | grep -E "objective +mle" >/dev/null || fail "fine-tuning is not mle"
same_model() { # same_model A.h5 B.h5: test NLLs within 1e-7
    local a b
    a=$(json_num nll "$("$cnf" eval --model "$1" --data toy.h5:/test --json --quiet)")
    b=$(json_num nll "$("$cnf" eval --model "$2" --data toy.h5:/test --json --quiet)")
    awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; exit !(d < 1e-7 && d > -1e-7) }' \
        || fail "--init did not start from the model: $1 nll $a, $2 nll $b"
}
"$cnf" train --data toy.h5 --flow "$root/flows/toy2d.cfg" --hidden 16-16 --batch 64 \
    --init fm.h5 --iters 1 --lr 1e-12 --val-every 1 --out ft0.h5 --quiet
same_model fm.h5 ft0.h5

# whitening: version 2, the preprocessing shown, eval and sample work, and
# a whitened otfm model too.
"$cnf" train --data toy.h5 "${fm[@]}" --iters 20 --preprocess whiten --out w.h5
h5dump -A -a /version w.h5 | grep "(0): 2" >/dev/null || fail "a whitened model is not version 2"
h5ls w.h5/preprocess/chol | has "{2, 2}" || fail "no /preprocess/chol"
"$cnf" info w.h5 | has "whiten" || fail "info does not show whitening"
"$cnf" eval --model w.h5 --data toy.h5:/test --json | has '"nll"' || fail "eval of a whitened model"
"$cnf" sample --model w.h5 --n 16 --out sw.h5 --quiet
h5dump -A -a /version fm.h5 | grep "(0): 1" >/dev/null || fail "a standardised model is not version 1"
# --init from a whitened model keeps the whitening
"$cnf" train --data toy.h5 "${fm[@]}" --init w.h5 --iters 1 --lr 1e-12 --warmup 0 --out w0.h5
h5dump -A -a /version w0.h5 | grep "(0): 2" >/dev/null || fail "--init dropped the whitening"
"$cnf" info w0.h5 | grep -E "preprocess +whiten" >/dev/null || fail "--init's record misnames the preprocessing"
same_model w.h5 w0.h5
ls | has -E '\.(cnf-)?tmp\.' && fail "a temporary file was left behind"
echo "e2e_fm: all passed"
