#!/usr/bin/env bash
# End-to-end test of the rules every subcommand follows (README, "The
# command"): exit statuses (0, 1 a failure while working, 2 a usage error,
# whether on the command line or in a preset), switches as --name/--no-name
# with --name 0|1 accepted, the lower-case --end-time/--learn-end-time
# beside --T/--learn-T, cnf info --model and --json, --resume without
# --data, the meaning of --json's iters, cnf eval's robust summaries, the
# progress line's width, and that the README's session writes only where
# .gitignore covers. Usage: bash tests/e2e_consistency.sh BUILD_DIR.
source "$(dirname "$0")/e2e_lib.bash"
status() { local rc=0; "$@" >/dev/null 2>err.txt || rc=$?; echo "$rc"; }

"$cnf" toy 8gaussians --n 600 --seed 3 --out toy.h5 --quiet
tiny=(--hidden 8-8 --batch 50 --val-every 5 --quiet)

# Exit statuses: a usage error is 2 wherever it is made.
printf 'hidden = 8\nbogus_key = 1\n' > badkey.cfg
printf 'hidden = 8\niters = many\n' > badval.cfg
[ "$(status "$cnf" train --data toy.h5 --bogus 1 --out m.h5)" = 2 ] || fail "unknown option: not 2"
[ "$(status "$cnf" train --data toy.h5 --flow badkey.cfg --out m.h5)" = 2 ] \
    || fail "unknown preset key: not 2 ($(cat err.txt))"
has "badkey.cfg:2: unknown key 'bogus_key'" err.txt || fail "unknown preset key: $(cat err.txt)"
[ "$(status "$cnf" train --data toy.h5 --flow badval.cfg --out m.h5)" = 2 ] \
    || fail "bad preset value: not 2 ($(cat err.txt))"
[ "$(status "$cnf" train --data toy.h5 --iters many --out m.h5)" = 2 ] || fail "bad value: not 2"
[ "$(status "$cnf" eval --data toy.h5)" = 2 ] || fail "missing --model: not 2"
[ "$(status "$cnf" train --data toy.h5 --objective fm --blocks 2 --out m.h5)" = 2 ] \
    || fail "options that do not go together: not 2"
[ "$(status "$cnf" eval --model missing.h5 --data toy.h5)" = 1 ] || fail "missing file: not 1"
[ "$(status "$cnf" nosuchcommand)" = 2 ] || fail "unknown command: not 2"
[ -e m.h5 ] && fail "a refused command wrote its output"

# Switches: --name, --no-name, --name 0|1, --name=0|1.
a=$("$cnf" train --data toy.h5 "${tiny[@]}" --iters 5 --out s1.h5 --json)
b=$("$cnf" train --data toy.h5 "${tiny[@]}" --iters 5 --out s2.h5 --json=1)
c=$("$cnf" train --data toy.h5 "${tiny[@]}" --iters 5 --out s3.h5 --json 1)
d=$("$cnf" train --data toy.h5 "${tiny[@]}" --iters 5 --out s4.h5 --no-json)
e=$("$cnf" train --data toy.h5 "${tiny[@]}" --iters 5 --out s5.h5 --json 0)
[ "$(json_num val_nll "$a")" = "$(json_num val_nll "$b")" ] && [ -n "$(json_num val_nll "$a")" ] \
    || fail "--json=1 differs from --json"
[ "$(json_num val_nll "$a")" = "$(json_num val_nll "$c")" ] || fail "--json 1 differs from --json"
[ -z "$d$e" ] || fail "--no-json / --json 0 printed: $d$e"
for form in "--learn-T 0" "--learn-T=0" "--no-learn-T" "--no-learn-end-time" "--learn-end-time 0"; do
    "$cnf" train --data toy.h5 "${tiny[@]}" --iters 3 $form --out l.h5
    "$cnf" info l.h5 | grep -E "learn_T +0" >/dev/null || fail "$form did not turn learn_T off"
done
"$cnf" train --data toy.h5 "${tiny[@]}" --iters 3 --learn-end-time --out l.h5
"$cnf" info l.h5 | grep -E "learn_T +1" >/dev/null || fail "--learn-end-time did not turn it on"
"$cnf" train --data toy.h5 "${tiny[@]}" --iters 3 --backsolve --out bs.h5
"$cnf" info bs.h5 | grep -E "backsolve +1" >/dev/null || fail "--backsolve (a 0|1 key) as a switch"
awk 'BEGIN { for (i = 0; i < 50; i++) print i "," 2 * i }' > lines.csv
"$cnf" convert lines.csv --no-shuffle \
    --out c1.h5 --quiet
"$cnf" convert lines.csv --shuffle 0 \
    --out c2.h5 --quiet
cmp <(h5dump -d /train c1.h5 | tail -n +2) <(h5dump -d /train c2.h5 | tail -n +2) \
    || fail "--no-shuffle differs from --shuffle 0"
h5dump -d /train c1.h5 | has "(0,0): 0, 0" || fail "--no-shuffle shuffled"
h=$("$cnf" train --help)
has -- "--learn-end-time .*also --learn-T" <<<"$h" || fail "--help does not show --learn-end-time"
has -- "--no-name" <<<"$h" || fail "--help does not explain switches"

# --end-time is --T (the same bits), in options and presets.
"$cnf" train --data toy.h5 "${tiny[@]}" --iters 4 --T 0.7 --out t1.h5
"$cnf" train --data toy.h5 "${tiny[@]}" --iters 4 --end-time 0.7 --out t2.h5
printf 'hidden = 8-8\nend_time = 0.7\nlearn_end_time = 1\n' > lc.cfg
"$cnf" train --data toy.h5 --flow lc.cfg --batch 50 --val-every 5 --iters 4 --out t3.h5 --quiet
n1=$("$cnf" eval --model t1.h5 --data toy.h5 --json --quiet)
for m in t2 t3; do
    n2=$("$cnf" eval --model $m.h5 --data toy.h5 --json --quiet)
    [ "$(json_num nll "$n1")" = "$(json_num nll "$n2")" ] || fail "$m: --end-time/end_time != --T"
done

# cnf info: --model beside the positional form, and --json.
cmp <("$cnf" info t1.h5) <("$cnf" info --model t1.h5) || fail "info --model differs"
j=$("$cnf" info --model t1.h5 --json)
has '^{"model": "t1.h5", "dim": 2, "blocks": 1, "n_params": 169,' <<<"$j" || fail "info --json: $j"
has '"preprocess": "standardize"' <<<"$j" || fail "info --json: preprocess: $j"
has '"hidden": \[8, 8\]' <<<"$j" || fail "info --json: hidden: $j"
has '"iteration": 4' <<<"$j" || fail "info --json: state: $j"
has '"train_data": "toy.h5:/train"' <<<"$j" || fail "info --json: record: $j"
[ "$(status "$cnf" info --model t1.h5 t2.h5)" = 2 ] || fail "info with two models: not 2"
[ "$(status "$cnf" info)" = 2 ] || fail "info without a model: not 2"

# --resume without --data trains on the recorded data: the same bits as with it.
"$cnf" train --data toy.h5 "${tiny[@]}" --iters 5 --out r5.h5
"$cnf" train --resume r5.h5 --iters 10 --out ra.h5 --quiet
"$cnf" train --resume r5.h5 --data toy.h5 --iters 10 --out rb.h5 --quiet
a=$("$cnf" eval --model ra.h5 --data toy.h5 --json --quiet)
b=$("$cnf" eval --model rb.h5 --data toy.h5 --json --quiet)
[ "$(json_num nll "$a")" = "$(json_num nll "$b")" ] || fail "--resume without --data differs"
"$cnf" train --resume r5.h5 --iters 7 --out rc.h5 2>log.txt
has "training on toy.h5:/train, validating on toy.h5:/val" log.txt || fail "--resume: $(cat log.txt)"

# --json's iters: the iteration reached; iters_target: --iters; iters_run: this call's.
j=$("$cnf" train --resume r5.h5 --iters 10 --out rd.h5 --json --quiet)
[ "$(json_num iters "$j")" = 10 ] && [ "$(json_num iters_target "$j")" = 10 ] \
    && [ "$(json_num iters_run "$j")" = 5 ] || fail "resumed --json: $j"
j=$("$cnf" train --data toy.h5 "${tiny[@]}" --iters 1000000 --val-every 100000 --max-time 1s \
    --out mt.h5 --json)
[ "$(json_num iters "$j")" = "$(json_num iters_run "$j")" ] \
    && [ "$(json_num iters_target "$j")" = 1000000 ] || fail "timed-out --json: $j"

# cnf eval: the median and the rows far above it, beside mean +- SE.
awk 'BEGIN { print "x,y"; for (i = 0; i < 40; i++) printf "%.3f,%.3f\n", 2 * cos(i), 2 * sin(i);
             print "40,40" }' > far.csv
"$cnf" convert far.csv --no-shuffle --split 0,0,1 --out far.h5 --quiet
e=$("$cnf" eval --model t1.h5 --data far.h5 --json --quiet)
[ "$(json_num n_outliers "$e")" = 1 ] || fail "eval: the far row is not counted: $e"
[ "$(json_num outlier_nats "$e")" = 20 ] || fail "eval: default threshold: $e"
awk -v m="$(json_num nll_median "$e")" -v n="$(json_num nll "$e")" -v x="$(json_num nll_max "$e")" \
    'BEGIN { exit !(m < n && x > m + 20) }' || fail "eval median/max: $e"
e=$("$cnf" eval --model t1.h5 --data far.h5 --json --quiet --outlier 1e6)
[ "$(json_num n_outliers "$e")" = 0 ] || fail "eval --outlier 1e6: $e"
"$cnf" eval --model t1.h5 --data far.h5 --quiet | has "median nll = .*; 1 row more than 20 nats above it" \
    || fail "eval prints no median line"

# The progress line fits the terminal (util-linux's script gives a terminal).
if command -v script >/dev/null && script -qc true /dev/null >/dev/null 2>&1; then
    script -qc "stty cols 50; '$cnf' train --data toy.h5 --hidden 8-8 --batch 50 --val-every 5 \
        --iters 40 --out p.h5" /dev/null > tty.txt </dev/null
    tr '\r' '\n' < tty.txt | sed 's/\x1b\[K//g' | grep '^iter [0-9]*/40' > lines.txt \
        || fail "no progress lines on a terminal: $(cat tty.txt)"
    awk 'length($0) >= 50 { print; bad = 1 } END { exit bad }' lines.txt \
        || fail "progress lines as wide as the 50-column terminal"
    has "eta" lines.txt || fail "progress lines without an eta"
else
    echo "e2e_consistency: progress-line check skipped (no 'script' with a terminal)"
fi

# The README's session writes only under demo-out/, which .gitignore covers.
session=$(awk '/^A session from data to samples/ { on = 1 } on && /^    cnf / { print } /^\| command/ { on = 0 }' \
    "$root/README.md")
[ -n "$session" ] || fail "README: no session found"
outs=$(grep -o -- '--\(out\|curve\) [^ ]*' <<<"$session" | awk '{ print $2 }')
[ -n "$outs" ] || fail "README session names no outputs"
for o in $outs; do
    case "$o" in demo-out/*) ;; *) fail "README session writes $o, outside demo-out/" ;; esac
done
grep -qx 'demo-out/' "$root/.gitignore" || fail ".gitignore does not cover demo-out/"
echo "e2e_consistency: all passed"
