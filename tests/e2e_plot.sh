#!/usr/bin/env bash
# End-to-end test of the pictures: cnf plot (axes, colour bar, title,
# --samples, --trajectories, the D > 2 marginal grid, --dims, seeds) and
# cnf train --curve, read back with the test helper pngprobe. A Gaussian
# blob's mode must land on its pixel. Usage: bash tests/e2e_plot.sh BUILD_DIR.
source "$(dirname "$0")/e2e_lib.bash"
probe="$build/pngprobe"
[ -x "$probe" ] || { echo "e2e_plot: skipped (built without libpng)"; exit 0; }
# field NAME TEXT: the numbers after "NAME [" in cnf plot's report, as "a b c d"
box() { sed -n "s/.*$1 \[\([0-9]*\), \([0-9]*\)) x \[\([0-9]*\), \([0-9]*\)).*/\1 \2 \3 \4/p" <<<"$2"; }

# A Gaussian blob at (3, -2), sd 0.5, 1000 rows (Box-Muller in awk).
awk 'BEGIN { srand(11); print "x,y"; for (i = 0; i < 1000; i++) {
        u = rand(); v = rand(); r = sqrt(-2 * log(1 - u)); a = 6.283185307 * v;
        printf "%.6f,%.6f\n", 3 + 0.5 * r * cos(a), -2 + 0.5 * r * sin(a) } }' > blob.csv
"$cnf" convert blob.csv --out blob.h5 --quiet
"$cnf" train --data blob.h5 --flow "$root/flows/toy2d-fm.cfg" --hidden 32-32 --iters 300 \
    --out blob-m.h5 --quiet

# The density: dimensions as reported, the mode's pixel, axes and colour bar drawn.
rep=$("$cnf" plot --model blob-m.h5 --data blob.h5 --xlim 0,6 --ylim -5,1 --size 120 --grid 60 \
    --out d.png 2>&1) || fail "plot --out d.png: $rep"
read -r W H <<<"$("$probe" d.png)"
has "wrote d.png: $W x $H pixels" <<<"$rep" || fail "plot: the PNG is not $W x $H: $rep"
read -r x0 x1 y0 y1 <<<"$(box "density panel" "$rep")"
[ "$((x1 - x0))" = 120 ] && [ "$((y1 - y0))" = 120 ] || fail "density panel not 120 px: $rep"
# the pixel nearest viridis's top (253, 231, 37): data (3, -2) is at
# x0 + 120 (3 - 0) / 6 = x0 + 60, y0 + 120 (1 - (-2)) / 6 = y0 + 60
read -r mx my md <<<"$("$probe" d.png nearest 253 231 37 "$x0" "$y0" "$x1" "$y1")"
dx=$((mx - x0 - 60)); dy=$((my - y0 - 60))
[ $((dx * dx + dy * dy)) -le 36 ] || fail "the mode is drawn at ($mx, $my), not near ($((x0 + 60)), $((y0 + 60)))"
# tick labels below and left of the panel, a title above
[ "$("$probe" d.png count-nonwhite "$x0" "$y1" "$x1" "$H")" -gt 50 ] || fail "no x tick labels"
[ "$("$probe" d.png count-nonwhite 0 "$y0" "$x0" "$y1")" -gt 50 ] || fail "no y tick labels"
[ "$("$probe" d.png count-nonwhite 0 0 "$W" "$((y0 - 12))")" -gt 50 ] || fail "no title"
# the colour bar: viridis from its top (yellow) to its bottom (dark violet), labels to its right
read -r c0 c1 cy0 cy1 <<<"$(box "colour bar" "$rep")"
read -r r g b <<<"$("$probe" d.png pixel $(((c0 + c1) / 2)) $((cy0 + 1)))"
[ "$r" -gt 200 ] && [ "$g" -gt 200 ] && [ "$b" -lt 100 ] || fail "colour bar top is $r $g $b"
read -r r g b <<<"$("$probe" d.png pixel $(((c0 + c1) / 2)) $((cy1 - 2)))"
[ "$r" -lt 100 ] && [ "$g" -lt 40 ] && [ "$b" -gt 60 ] || fail "colour bar bottom is $r $g $b"
[ "$("$probe" d.png count-nonwhite "$c1" "$cy0" "$W" "$cy1")" -gt 50 ] || fail "no colour bar labels"
has "NLL" <<<"$rep" || true
# --max-points: the drawn points are capped and reported
has ", 100 data points" <<<"$rep" || fail "plot did not draw the 100 test rows: $rep"
rep=$("$cnf" plot --model blob-m.h5 --data blob.h5 --size 60 --max-points 50 --out p50.png 2>&1) || fail "plot --out p50.png: $rep"
has ", 50 data points" <<<"$rep" || fail "--max-points 50: $rep"

# --samples and --trajectories add panels (and their pixels), and the same
# seed gives the same picture while another does not.
rep=$("$cnf" plot --model blob-m.h5 --data blob.h5 --size 60 --samples 300 --trajectories 20 \
    --frames 6 --seed 4 --out st.png 2>&1) || fail "plot --out st.png: $rep"
has "300 samples, 20 trajectories" <<<"$rep" || fail "--samples/--trajectories: $rep"
read -r W2 H2 <<<"$("$probe" st.png)"
read -r W1 H1 <<<"$("$probe" p50.png)"
has "wrote st.png: $W2 x $H2 pixels, 4 panels" <<<"$rep" || fail "not 4 panels: $rep"
[ "$W2" -gt "$W1" ] || fail "--samples/--trajectories did not widen the picture ($W2 vs $W1 px)"
[ "$("$probe" st.png count 214 80 30 60 0 0 "$W2" "$H2")" -gt 30 ] || fail "no sample-coloured pixels"
"$cnf" plot --model blob-m.h5 --data blob.h5 --size 60 --samples 300 --trajectories 20 \
    --frames 6 --seed 4 --out st2.png --quiet
cmp -s st.png st2.png || fail "plot: the same seed gave different pictures"
"$cnf" plot --model blob-m.h5 --data blob.h5 --size 60 --samples 300 --seed 5 --out st3.png --quiet
cmp -s st.png st3.png && fail "plot: another seed gave the same picture"
# --colour linear: the colour bar is of the density (its labels differ)
"$cnf" plot --model blob-m.h5 --size 60 --colour linear --out lin.png --quiet
"$cnf" plot --model blob-m.h5 --size 60 --out log.png --quiet
cmp -s lin.png log.png && fail "--colour linear drew the log-density"
"$cnf" plot --model blob-m.h5 --size 60 --log --out log2.png --quiet
cmp -s log.png log2.png || fail "--log is not --colour log"
"$cnf" plot --model blob-m.h5 --size 60 --log-range 4 --out lr.png --quiet
cmp -s log.png lr.png && fail "--log-range 4 drew the default 10-nat scale"

# D > 2: a grid of marginals, data below the diagonal, samples above.
"$cnf" train --data "$root/datasets/penguins.h5" --flow "$root/flows/small-fm.cfg" --iters 200 \
    --out peng.h5 --quiet
rep=$("$cnf" plot --model peng.h5 --data "$root/datasets/penguins.h5" --samples 200 \
    --out grid.png 2>&1) || fail "plot --out grid.png: $rep"
has "a 4 x 4 grid of marginals, 68 data points, 200 samples" <<<"$rep" || fail "grid: $rep"
rep=$("$cnf" plot --model peng.h5 --data "$root/datasets/penguins.h5" --dims 0,3 --size 80 \
    --out grid2.png 2>&1) || fail "plot --out grid2.png: $rep"
has "a 2 x 2 grid" <<<"$rep" || fail "--dims 0,3: $rep"
# --trajectories beside the grid, in the first two --dims: a wider picture
rep=$("$cnf" plot --model peng.h5 --data "$root/datasets/penguins.h5" --dims 0,3 --size 80 \
    --trajectories 10 --frames 4 --out grid3.png 2>&1) || fail "plot --out grid3.png: $rep"
has "a 2 x 2 grid of marginals, 68 data points, 1000 samples, 10 trajectories" <<<"$rep" \
    || fail "grid --trajectories: $rep"
[ "$("$probe" grid3.png | cut -d' ' -f1)" -gt "$("$probe" grid2.png | cut -d' ' -f1)" ] \
    || fail "grid --trajectories: no paths panel"
read -r gw gh <<<"$("$probe" grid2.png)"
[ "$("$probe" grid2.png count 31 90 170 60 0 0 "$gw" "$gh")" -gt 20 ] || fail "grid: no data pixels"
[ "$("$probe" grid2.png count 214 80 30 60 0 0 "$gw" "$gh")" -gt 20 ] || fail "grid: no sample pixels"
# usage errors: exit 2, nothing written
for bad in "--dims 0,4" "--dims 1,1" "--dims 2" "--xlim 0,1" "--trajectories 100"; do
    rc=0
    "$cnf" plot --model peng.h5 --data "$root/datasets/penguins.h5" $bad --out bad.png \
        2>err.txt || rc=$?
    [ "$rc" = 2 ] || fail "plot $bad: exit $rc, not 2"
    [ -e bad.png ] && fail "plot $bad wrote a picture"
    has -e "--" err.txt || fail "plot $bad: no message"
done
rc=0
"$cnf" plot --model blob-m.h5 --dims 0,1 --out bad.png 2>err.txt || rc=$?
[ "$rc" = 2 ] && has "D = 2" err.txt || fail "--dims on a 2-D model: exit $rc: $(cat err.txt)"

# cnf train --curve: four panels; the output directory is checked first.
"$cnf" train --data blob.h5 --flow "$root/flows/toy2d.cfg" --hidden 8-8 --iters 30 --batch 50 \
    --val-every 10 --curve curve.png --out cm.h5 2>log.txt
has "wrote curve.png: training curves of 30 iterations and 3 validations" log.txt \
    || fail "--curve: $(cat log.txt)"
read -r cw ch <<<"$("$probe" curve.png)"
[ "$cw" -gt 600 ] && [ "$ch" -gt 400 ] || fail "--curve is $cw x $ch"
# lines drawn in each quarter (the series' blue)
for q in "0 0" "1 0" "0 1" "1 1"; do
    set -- $q
    n=$("$probe" curve.png count 31 90 170 40 $(($1 * cw / 2)) $(($2 * ch / 2)) \
        $((($1 + 1) * cw / 2)) $((($2 + 1) * ch / 2)))
    [ "$n" -gt 20 ] || fail "--curve: quarter $q has no curve"
done
"$cnf" train --data blob.h5 --flow "$root/flows/toy2d-fm.cfg" --hidden 8 --iters 30 \
    --curve curve-fm.png --out cfm.h5 --quiet
[ -s curve-fm.png ] || fail "--curve under flow matching wrote nothing"
rc=0
"$cnf" train --data blob.h5 --hidden 8 --iters 3 --batch 20 --curve nodir/c.png --out x.h5 \
    2>err.txt || rc=$?
[ "$rc" = 1 ] && has -- "--curve" err.txt || fail "--curve nodir/: exit $rc: $(cat err.txt)"
[ -e x.h5 ] && fail "--curve nodir/: trained anyway"
ls -a | has '\.tmp\.' && fail "a temporary file was left behind"
echo "e2e_plot: all passed"
