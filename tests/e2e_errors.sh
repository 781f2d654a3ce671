#!/usr/bin/env bash
# End-to-end test of the `cnf` command's failure rules (issue 5, item 5):
# each bad input gives a message naming the problem, a non-zero exit, no
# partial output file, and an existing output file left byte-identical.
# Usage: bash tests/e2e_errors.sh BUILD_DIR (holding `cnf`).
source "$(dirname "$0")/e2e_lib.bash"

# Fixtures: data via convert, a tiny model, a NaN data set and a rank-1 data
# set via h5import (hdf5-tools), a model of a newer version (3) by patching
# the version attribute's value.
awk 'BEGIN { srand(3); for (i = 0; i < 200; i++) printf "%.6f,%.6f\n", rand(), rand() * rand() }' > d.csv
"$cnf" convert d.csv --out data.h5 --quiet
awk 'BEGIN { srand(4); for (i = 0; i < 50; i++) printf "%.6f,%.6f,%.6f\n", rand(), rand(), rand() }' > d3.csv
"$cnf" convert d3.csv --out data3.h5 --quiet
"$cnf" train --data data.h5 --hidden 4 --iters 2 --batch 20 --val-every 2 --out m.h5 --quiet
printf '1 2\n3 4\n5 nan\n7 8\n' > nan.txt
printf 'PATH x\nINPUT-CLASS TEXTFP\nRANK 2\nDIMENSION-SIZES 4 2\nOUTPUT-CLASS FP\nOUTPUT-SIZE 64\n' > nan.cfg
h5import nan.txt -c nan.cfg -o nan.h5
printf '1 2 3 4\n' > vec.txt
printf 'PATH v\nINPUT-CLASS TEXTFP\nRANK 1\nDIMENSION-SIZES 4\nOUTPUT-CLASS FP\nOUTPUT-SIZE 64\n' > vec.cfg
h5import vec.txt -c vec.cfg -o vec.h5
# The int64 value 1 that follows the attribute name "version": try each
# candidate position until h5dump reads the attribute as 3. cnf writes
# HDF5's newest format, whose checksums would refuse the patched file: the
# patch goes into a copy in the oldest format (h5repack's default), which
# has none and which cnf reads as well.
# (awk, not head: head exiting early could SIGPIPE grep and fail the pipeline)
h5repack m.h5 m-oldformat.h5
off=$(grep -obUa 'version' m-oldformat.h5 | awk -F: 'NR == 1 { print $1 }')
found=0
for d in $(seq 8 8 64); do
    cp m-oldformat.h5 v3.h5
    pos=$((off + d))
    [ "$(od -An -tx1 -j "$pos" -N 8 v3.h5 | tr -d ' \n')" = 0100000000000000 ] || continue
    printf '\x03' | dd of=v3.h5 bs=1 seek="$pos" conv=notrunc 2>/dev/null
    if h5dump -a /version v3.h5 2>/dev/null | has '(0): 3'; then found=1; break; fi
done
[ "$found" = 1 ] || fail "could not make a version-3 model fixture"

# Missing file, missing data set, wrong rank, NaN row.
expect_fail "nofile.h5" L.h5 -- "$cnf" eval --model m.h5 --data nofile.h5 --out L.h5
expect_fail "/nope" L.h5 -- "$cnf" eval --model m.h5 --data data.h5:/nope --out L.h5
expect_fail "rank 1" L.h5 -- "$cnf" eval --model m.h5 --data vec.h5:/v --out L.h5
expect_fail "row 2.*nan" L.h5 -- "$cnf" eval --model m.h5 --data nan.h5:/x --out L.h5
expect_fail "row 2.*nan" M.h5 -- "$cnf" train --train nan.h5:/x --val data.h5:/val --batch 2 --out M.h5
expect_fail "nomodel.h5" S.h5 -- "$cnf" sample --model nomodel.h5 --out S.h5
# Fewer rows than a batch.
expect_fail "fewer than a batch" M.h5 -- "$cnf" train --data data.h5 --batch 1000 --out M.h5
# Dimension mismatch: eval, train --resume, grad.
expect_fail "3 columns.*dimension is 2" L.h5 -- "$cnf" eval --model m.h5 --data data3.h5 --out L.h5
expect_fail "3 columns.*dimension is 2" M.h5 -- "$cnf" train --data data3.h5 --resume m.h5 --iters 4 --batch 5 --out M.h5
expect_fail "3 columns.*dimension is 2" G.h5 -- "$cnf" grad --model m.h5 --data data3.h5:/train --out G.h5
# A model of another format (a data file) or version.
expect_fail "not a cnf model" L.h5 -- "$cnf" eval --model data.h5 --data data.h5 --out L.h5
expect_fail "version 3 .written by a newer cnf" S.h5 -- "$cnf" sample --model v3.h5 --out S.h5
expect_fail "version 3 .written by a newer cnf" - -- "$cnf" info v3.h5
# Unknown option, bad numbers, unknown preset key, bad preset value.
expect_fail "unknown option '--bogus'" M.h5 -- "$cnf" train --data data.h5 --bogus 3 --out M.h5
expect_fail "--n '0'.*at least 1" S.h5 -- "$cnf" sample --model m.h5 --n 0 --out S.h5
expect_fail "--rtol '-1'.*positive" L.h5 -- "$cnf" eval --model m.h5 --data data.h5 --rtol -1 --out L.h5
expect_fail "unknown command" - -- "$cnf" trian
printf 'hidden = 8\nlayers = concat\n' > bad.cfg
expect_fail "bad.cfg:2: unknown key 'layers'" M.h5 -- "$cnf" train --data data.h5 --flow bad.cfg --out M.h5
printf 'act = relu\n' > bad2.cfg
expect_fail "bad2.cfg:1: .*relu" M.h5 -- "$cnf" train --data data.h5 --flow bad2.cfg --out M.h5
# The adjoint's keys: a bad name, on the command line a usage error (exit
# 2), in a preset one naming its line; both name the key and the valid names.
expect_fail "gradient_tol: unknown gradient tolerance 'absolute' \(valid: entrywise, relative\)" \
    M.h5 -- "$cnf" train --data data.h5 --gradient-tol absolute --out M.h5
rc=0
"$cnf" train --data data.h5 --gradient-tol absolute --out M.h5 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "--gradient-tol absolute: exit $rc, not 2 (a usage error)"
printf 'checkpoints = cubic\n' > bad3.cfg
expect_fail "bad3.cfg:1: checkpoints: unknown interpolation 'cubic' \(valid: hermite, dense\)" \
    M.h5 -- "$cnf" train --data data.h5 --flow bad3.cfg --out M.h5
# Missing output directory: refused before any work.
expect_fail "nodir.*does not exist" - -- "$cnf" train --data data.h5 --out nodir/M.h5
expect_fail "nodir.*does not exist" - -- "$cnf" toy moons --n 10 --out nodir/t.h5
expect_fail "nodir.*does not exist" - -- "$cnf" plot --model m.h5 --out nodir/p.png
# A solve that cannot meet its tolerance: step limit, step-size underflow.
expect_fail "max_steps|step limit" L.h5 -- "$cnf" eval --model m.h5 --data data.h5 --max-steps 1 --out L.h5
expect_fail "underflow" S.h5 -- "$cnf" sample --model m.h5 --rtol 1e-300 --atol 1e-300 --out S.h5
expect_fail "max_steps|step limit.*nothing saved" M.h5 -- "$cnf" train --data data.h5 --batch 20 --max-steps 1 --out M.h5
# A training solve that fails after an iteration completed: a huge learning
# rate sends T from 1 to 81 in the first step, so the second iteration's
# solves need far more than 50 steps (the first takes about 20). The last
# parameters are saved (no validation ran yet), the exit is still non-zero.
rm -f M.h5
rc=0
"$cnf" train --data data.h5 --hidden 8-8 --batch 20 --iters 5 --val-every 3 --lr 10 --max-steps 50 \
    --out M.h5 >stdout.txt 2>stderr.txt || rc=$?
[ "$rc" -ne 0 ] || fail "train that fails at iteration 2 exited 0"
grep -qE "failed at iteration 2: .*(max_steps|step limit).*saved the last parameters \(iteration 1" \
    stderr.txt || fail "train failing at iteration 2: unexpected message: $(cat stderr.txt)"
"$cnf" info M.h5 | grep "state: iteration 1," >/dev/null || fail "the model saved after a failure does not load"
if ls -a | has -E '\.(cnf-)?tmp\.'; then fail "temporary file left by the failed training"; fi
rm -f M.h5
cases=$((cases + 1))
expect_fail "max_steps|step limit" G.h5 -- "$cnf" grad --model m.h5 --data data.h5:/train --max-steps 1 --out G.h5
expect_fail "max_steps|step limit" P.png -- "$cnf" plot --model m.h5 --size 8 --max-steps 1 --out P.png
# convert: ragged rows and non-numeric cells, named by line and column.
printf 'a,b\n1,2\n3,4,5\n' > ragged.csv
expect_fail "line 3 has 3 columns, expected 2" C.h5 -- "$cnf" convert ragged.csv --out C.h5
printf '1,2\n3,x4\n' > text.csv
expect_fail "line 2, column 2: 'x4' is not a number" C.h5 -- "$cnf" convert text.csv --out C.h5
expect_fail "split" C.h5 -- "$cnf" convert d.csv --split 0.5,0.5,0.5 --out C.h5
# plot draws a D > 2 model as a grid of marginals: the 2-D panels' options are refused.
"$cnf" train --data data3.h5 --hidden 4 --iters 1 --batch 10 --val-every 1 --out m3.h5 --quiet
expect_fail "xlim sets a 2-D model's range; m3.h5 has D = 3" P.png -- "$cnf" plot --model m3.h5 \
    --data data3.h5 --xlim 0,1 --out P.png
expect_fail "dims 0,3: column 3 is out of range" P.png -- "$cnf" plot --model m3.h5 --dims 0,3 --out P.png
# Flow matching and --init: refused combinations, named.
expect_fail "otfm trains one block.*blocks = 1, T = 1 and learn_T = 0" M.h5 -- "$cnf" train --data data.h5 \
    --flow "$root/flows/toy2d.cfg" --objective otfm --out M.h5
expect_fail "fm trains one block.*learn_T = 1" M.h5 -- "$cnf" train --data data.h5 --objective fm --T 1 --out M.h5
expect_fail "objective.*'mlx'.*mle, fm or otfm" M.h5 -- "$cnf" train --data data.h5 --objective mlx --out M.h5
expect_fail "preprocess.*whitening" M.h5 -- "$cnf" train --data data.h5 --preprocess whitening --out M.h5
expect_fail "architectures differ.*this run has hidden 8 concatsquash tanh, m.h5 has hidden 4 concatsquash tanh" \
    M.h5 -- "$cnf" train --data data.h5 --hidden 8 --init m.h5 --iters 2 --batch 20 --out M.h5
expect_fail "this run has D = 3 and 1 block.*m.h5 has D = 2" M.h5 -- "$cnf" train --data data3.h5 --hidden 4 --init m.h5 \
    --iters 2 --batch 10 --out M.h5
expect_fail "give one of them" M.h5 -- "$cnf" train --data data.h5 --resume m.h5 --init m.h5 --out M.h5
expect_fail "preprocessing from m.h5" M.h5 -- "$cnf" train --data data.h5 --init m.h5 --preprocess whiten --out M.h5
# m.h5 ends at T = 1 but learns it: flow matching from it needs learn_T = 0,
# and from a model whose T moved, T = 1
"$cnf" train --data data.h5 --hidden 4 --iters 3 --batch 20 --val-every 3 --T 0.5 --out mT.h5 --quiet
expect_fail "mT.h5: .*end time is T = 0\.4" M.h5 -- "$cnf" train --data data.h5 --hidden 4 --init mT.h5 \
    --objective fm --learn-T 0 --iters 2 --batch 20 --out M.h5
expect_fail "max-time '15x'.*duration" M.h5 -- "$cnf" train --data data.h5 --max-time 15x --out M.h5
# --resume continues a run: not with another objective, preprocessing or
# selection criterion
"$cnf" train --data data.h5 --hidden 4 --objective fm --T 1 --learn-T 0 --iters 4 --batch 20 \
    --val-every 2 --out mfm.h5 --quiet
expect_fail "objective fm; to train it by mle .*--init" M.h5 -- "$cnf" train --data data.h5 \
    --resume mfm.h5 --objective mle --iters 8 --out M.h5
expect_fail "preprocessing \(standardize\) is fixed" M.h5 -- "$cnf" train --data data.h5 \
    --resume mfm.h5 --preprocess whiten --iters 8 --out M.h5
expect_fail "best model by validation loss; --val-nll-every 2" M.h5 -- "$cnf" train --data data.h5 \
    --resume mfm.h5 --val-nll-every 2 --iters 8 --out M.h5
# Sizes whose product overflows: refused with a message, not a crash (the
# products were unchecked: SIGSEGV, a garbage message, a silent width 8).
expect_fail "--n: 1152921504606846976 x 2 values do not fit" S.h5 -- \
    "$cnf" sample --model m.h5 --n 1152921504606846976 --out S.h5
expect_fail "--n: 9223372036854775808 x 2 values do not fit" S.h5 -- \
    "$cnf" sample --model m.h5 --n 9223372036854775808 --out S.h5
expect_fail "--n: 1152921504606846976 x 2 values do not fit" T.h5 -- \
    "$cnf" toy moons --n 1152921504606846976 --out T.h5
expect_fail "hidden widths '9223372036854775812D': width at position 1 is too large" M.h5 -- \
    "$cnf" train --data data.h5 --hidden 9223372036854775812D --out M.h5
# toy refuses a split that leaves /val or /test empty by rounding, as convert
# does (train would refuse the file)
expect_fail "3 rows split 0.8,0.1,0.1 leave /val empty" T.h5 -- \
    "$cnf" toy moons --n 3 --split 0.8,0.1,0.1 --out T.h5
# Finite rows so far out that their log-density overflows: named, exit 1,
# no --out (it printed "nll = inf +- -nan" and exited 0).
printf '0.1,0.2\n0.3,0.1\n1e200,0.5\n0.2,0.2\n-1e180,1e170\n0.1,0.1\n0.2,0.3\n0.1,0.4\n0.5,0.5\n0.3,0.3\n' \
    > huge.csv
"$cnf" convert huge.csv --out huge.h5 --split 0.6,0.2,0.2 --shuffle 0 --quiet
expect_fail "2 of 6 rows have a log-likelihood that is not finite: row 2 \(-inf\), row 4" L.h5 -- \
    "$cnf" eval --model m.h5 --data huge.h5:/train --out L.h5
# Presets: a NUL byte is refused (it cut the value short), a repeated key is
# warned about (the last value is used).
printf 'hidden = 8\000-8\n' > nul.cfg
expect_fail "nul.cfg:1: the line contains a NUL byte" M.h5 -- \
    "$cnf" train --data data.h5 --flow nul.cfg --out M.h5
printf 'hidden = 8\nlr = 0.01\nhidden = 4\n' > dup.cfg
"$cnf" train --data data.h5 --flow dup.cfg --iters 1 --batch 20 --out dup.h5 --quiet 2>dup.txt
grep -q "warning: dup.cfg:3: key 'hidden' was already set on line 1" dup.txt \
    || fail "a repeated preset key is not warned about: $(cat dup.txt)"
"$cnf" info dup.h5 | has "widths 2-4-2" || fail "the repeated key's last value is not the one used"

echo "e2e_errors: all $cases cases passed"
