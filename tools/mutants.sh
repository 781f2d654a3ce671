#!/usr/bin/env bash
# Hostile model files: N byte-mutated copies of a freshly trained model
# (with its training record) through `cnf info` and `cnf eval`, each run
# under `ulimit -v` 1 GB and a 20 s limit. Passes when no run ends by a
# signal, none runs out of time and none needs more than 1 GB (a refused
# allocation is an error exit, which is fine: the file is damaged). A run
# may load its mutant (a changed byte HDF5 never reads) or refuse it with a
# message: both are fine.
#
#   tools/mutants.sh [N] [SEED]     (default 1000 mutants, seed 1)
#
# Uses build/cnf (CNF_BUILD_DIR to change; a Release build: the sanitizers
# reserve more address space than the limit). Each mutant changes 1 to 8
# bytes at random positions to random values; $RANDOM seeded by SEED makes
# the same mutants every time. Prints the tally; a failing mutant is kept in
# the work directory (MUTANTS_KEEP=DIR, default a temporary one, removed
# when everything passed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-1000}
seed=${2:-1}
case $n$seed in ''|*[!0-9]*) echo "mutants.sh: N and SEED must be whole numbers" >&2; exit 2;; esac
build=${CNF_BUILD_DIR:-$root/build}
cnf=$build/cnf
[ -x "$cnf" ] || { echo "mutants.sh: $cnf is missing (tools/build.sh first)" >&2; exit 2; }
work=${MUTANTS_KEEP:-$(mktemp -d)}
mkdir -p "$work"
cd "$work"
limit_kb=$((1024 * 1024))

"$cnf" toy moons --n 300 --seed "$seed" --out data.h5 --quiet
"$cnf" train --data data.h5 --hidden 8-8 --iters 20 --batch 50 --val-every 10 --seed "$seed" \
    --out model.h5 --quiet
size=$(stat -c %s model.h5)

RANDOM=$seed
ok=0 refused=0 bad=0
for ((i = 0; i < n; i++)); do
    cp model.h5 mutant.h5
    k=$((RANDOM % 8 + 1))
    for ((j = 0; j < k; j++)); do
        pos=$(( (RANDOM * 32768 + RANDOM) % size ))
        printf "\\$(printf '%03o' $((RANDOM % 256)))" \
            | dd of=mutant.h5 bs=1 seek="$pos" conv=notrunc status=none
    done
    for cmd in info eval; do
        args=(info mutant.h5)
        [ $cmd = eval ] && args=(eval --model mutant.h5 --data data.h5:/test --quiet)
        rc=0
        (ulimit -v $limit_kb; exec timeout -s KILL 20 "$cnf" "${args[@]}") >out.txt 2>err.txt \
            || rc=$?
        if [ $rc -eq 0 ]; then
            ok=$((ok + 1))
        elif [ $rc -ge 1 ] && [ $rc -le 127 ] && [ -s err.txt ] && ! grep -q "out of memory" err.txt
        then
            refused=$((refused + 1))
        else
            bad=$((bad + 1))
            cp mutant.h5 "failed-$i.h5"
            echo "mutant $i: cnf $cmd exited $rc ($( [ $rc -eq 137 ] && echo 'killed after 20 s' \
                || head -c 200 err.txt))" >&2
        fi
    done
done
echo "mutants.sh: $n mutants x (info, eval): $ok runs loaded, $refused refused with a message," \
     "$bad failed (signal, over 20 s, or out of memory under 1 GB)"
if [ $bad -eq 0 ] && [ -z "${MUTANTS_KEEP:-}" ]; then
    cd / && rm -rf "$work"
fi
[ $bad -eq 0 ]
