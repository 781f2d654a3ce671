#!/usr/bin/env bash
# End-to-end test of the rules every command's files follow (include/cnf/file.h,
# README "Files"): an output that is one of the inputs is refused (compared by
# device and inode); inputs must be regular files (directories, devices, FIFOs
# refused without blocking); an existing output must be a regular file or a
# symbolic link to one, which is written through; a rewrite keeps the file's
# permission bits; temporary files are removed on SIGINT/SIGTERM and, when a
# process was killed outright, by the next write of that output; file names up
# to NAME_MAX work. Cases that need strace (signals delivered at a chosen
# system call) are skipped with a message when it is missing.
# Usage: bash tests/e2e_files.sh BUILD_DIR (holding `cnf`).
set -euo pipefail
build=$(cd "${1:?usage: e2e_files.sh BUILD_DIR}" && pwd)
cnf="$build/cnf"
tmp=$(mktemp -d)
sleeper=
trap '[ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null; rm -rf "$tmp"' EXIT
cd "$tmp"
fail() { echo "FAIL: $*" >&2; exit 1; }
has() { grep "$@" >/dev/null; }
no_temporaries() {
    if ls -a | has -E '\.(cnf-)?tmp\.'; then fail "temporary file left by: $*: $(ls -a | tr '\n' ' ')"; fi
}
cases=0

# refused PATTERN FILE -- CMD...: CMD must exit with a status from 1 to 127
# within 20 s (a FIFO must not block it) with PATTERN in its stderr; FILE (an
# input, or - for none) must be byte-identical afterwards and no temporary
# file may be left.
refused() {
    local pattern=$1 file=$2
    shift 3
    [ "$file" = - ] || cp -P "$file" "$tmp/before.bak"
    local rc=0
    timeout 20 "$@" >stdout.txt 2>stderr.txt || rc=$?
    [ "$rc" -ge 1 ] && [ "$rc" -le 127 ] && [ "$rc" -ne 124 ] \
        || fail "status $rc for: $* (stderr: $(cat stderr.txt))"
    grep -qiE -- "$pattern" stderr.txt || fail "message lacks /$pattern/ for: $*; got: $(cat stderr.txt)"
    if [ "$file" != - ]; then
        cmp -s "$file" "$tmp/before.bak" || fail "$file changed by: $*"
        rm -f "$tmp/before.bak"
    fi
    no_temporaries "$*"
    [ -n "${VERBOSE:-}" ] && echo "ok: $(head -c 300 stderr.txt)"
    cases=$((cases + 1))
}

awk 'BEGIN { srand(3); for (i = 0; i < 200; i++) printf "%.6f,%.6f\n", rand(), rand() * rand() }' > d.csv
"$cnf" convert d.csv --out data.h5 --quiet
"$cnf" train --data data.h5 --hidden 4 --iters 2 --batch 20 --val-every 2 --out m.h5 --quiet
"$cnf" sample --model m.h5 --n 10 --out z.h5 --quiet
printf 'hidden = 4\nbatch = 20\n' > p.cfg

# ---- An output that is one of the inputs (item 5) ----------------------------
same="is the input .* \(the same file\)"
refused "$same" m.h5 -- "$cnf" eval --model m.h5 --data data.h5 --out m.h5
refused "$same" m.h5 -- "$cnf" sample --model m.h5 --out m.h5
refused "$same" m.h5 -- "$cnf" grad --model m.h5 --data data.h5:/train --out m.h5
refused "$same" data.h5 -- "$cnf" train --data data.h5 --hidden 4 --batch 20 --out data.h5
refused "$same" data.h5 -- "$cnf" train --train data.h5:/train --val data.h5:/val --out data.h5
refused "$same" data.h5 -- "$cnf" eval --model m.h5 --data data.h5 --out data.h5
refused "$same" d.csv -- "$cnf" convert d.csv --out d.csv
refused "$same" p.cfg -- "$cnf" train --data data.h5 --flow p.cfg --out p.cfg
refused "$same" m.h5 -- "$cnf" train --data data.h5 --hidden 4 --init m.h5 --out m.h5
refused "$same" z.h5 -- "$cnf" sample --model m.h5 --latent z.h5:/samples --out z.h5
refused "$same" m.h5 -- "$cnf" plot --model m.h5 --size 4 --out m.h5
# by device and inode, not by name: another spelling, a hard link, a symbolic link
refused "$same" m.h5 -- "$cnf" sample --model m.h5 --out ./m.h5
ln m.h5 hard.h5
refused "$same" m.h5 -- "$cnf" sample --model m.h5 --out hard.h5
rm hard.h5
ln -s data.h5 soft.h5
refused "$same" data.h5 -- "$cnf" eval --model m.h5 --data data.h5 --out soft.h5
rm soft.h5
# --resume M --out M continues a run into its own file: allowed
cp m.h5 r.h5
"$cnf" train --data data.h5 --resume r.h5 --iters 4 --out r.h5 --quiet
"$cnf" info r.h5 | has "state: iteration 4," || fail "--resume r.h5 --out r.h5 did not continue the run"
cases=$((cases + 1))

# ---- Inputs that are not regular files (item 6) ------------------------------
mkdir adir
mkfifo fifo
refused "adir.*is a directory" - -- "$cnf" train --data data.h5 --flow adir --out M.h5
refused "/dev/zero.*character device" - -- "$cnf" train --data data.h5 --flow /dev/zero --out M.h5
refused "fifo.*FIFO" - -- "$cnf" train --data data.h5 --flow fifo --out M.h5
refused "fifo.*FIFO" - -- "$cnf" train --data fifo --out M.h5
refused "fifo.*FIFO" - -- "$cnf" eval --model fifo --data data.h5
refused "fifo.*FIFO" - -- "$cnf" eval --model m.h5 --data fifo:/test
refused "fifo.*FIFO" - -- "$cnf" info fifo
refused "fifo.*FIFO" - -- "$cnf" convert fifo --out C.h5
refused "/dev/zero.*character device" - -- "$cnf" convert /dev/zero --out C.h5
refused "adir.*is a directory" - -- "$cnf" convert adir --out C.h5
refused "adir.*is a directory" - -- "$cnf" sample --model adir --out S.h5
[ -e M.h5 ] || [ -e C.h5 ] || [ -e S.h5 ] && fail "an output was written for a refused input"

# ---- Outputs that are not regular files (item 7) -----------------------------
refused "fifo.*FIFO.*regular files" - -- "$cnf" toy moons --n 100 --out fifo
[ -p fifo ] || fail "the FIFO at --out was replaced"
refused "adir.*directory" - -- "$cnf" toy moons --n 100 --out adir
ln -s fifo fifolink.h5
refused "fifolink.h5.*symbolic link to .*fifo.*FIFO" - -- "$cnf" sample --model m.h5 --out fifolink.h5
[ -L fifolink.h5 ] && [ -p fifo ] || fail "the link to a FIFO at --out was replaced"
ln -s missing.h5 dangling.h5
refused "dangling.h5.*symbolic link to a missing file" - -- "$cnf" toy moons --n 100 --out dangling.h5
[ -L dangling.h5 ] && [ ! -e missing.h5 ] || fail "a dangling link at --out was replaced or followed"
if [ "$(id -u)" = 0 ]; then
    # a device node of our own (the same device as /dev/null): replacing it
    # here would harm nothing, refusing it is the rule
    mknod nulldev c 1 3
    refused "nulldev.*character device" - -- "$cnf" eval --model m.h5 --data data.h5 --out nulldev
    [ -c nulldev ] || fail "the device node at --out was replaced"
else
    echo "e2e_files: not root, the device-node output case is skipped"
fi
# a symbolic link to a regular file is written through: the link stays, the
# file it points to is replaced
mkdir -p sub
"$cnf" toy moons --n 100 --seed 1 --out sub/real.h5 --quiet
ln -s sub/real.h5 link.h5
"$cnf" toy moons --n 200 --seed 2 --out link.h5 --quiet
[ -L link.h5 ] || fail "writing through a symbolic link replaced the link"
[ "$(readlink link.h5)" = sub/real.h5 ] || fail "the link's target changed"
h5dump -H -d /train sub/real.h5 | has "( 160, 2 )" || fail "the file the link points to was not rewritten"
no_temporaries "toy through a link"
(cd sub && no_temporaries "toy through a link")
cases=$((cases + 1))

# ---- Permission bits are kept (item 8) ---------------------------------------
cp m.h5 priv.h5
chmod 600 priv.h5
"$cnf" train --data data.h5 --resume priv.h5 --iters 4 --out priv.h5 --quiet
[ "$(stat -c %a priv.h5)" = 600 ] || fail "train --resume priv.h5 --out priv.h5 left mode $(stat -c %a priv.h5)"
chmod 640 z.h5
"$cnf" sample --model m.h5 --n 5 --out z.h5 --quiet
[ "$(stat -c %a z.h5)" = 640 ] || fail "sample over a 0640 file left mode $(stat -c %a z.h5)"
chmod 604 sub/real.h5
"$cnf" toy moons --n 100 --out link.h5 --quiet
[ "$(stat -c %a sub/real.h5)" = 604 ] || fail "a write through a link left mode $(stat -c %a sub/real.h5)"
(umask 027 && "$cnf" toy moons --n 100 --out new.h5 --quiet)
[ "$(stat -c %a new.h5)" = 640 ] || fail "a new file under umask 027 has mode $(stat -c %a new.h5)"
cases=$((cases + 4))

# ---- Long names (item 10): up to NAME_MAX bytes -------------------------------
long=$(printf 'n%.0s' $(seq 1 252)).h5   # 255 bytes
"$cnf" toy moons --n 100 --out "$long" --quiet || fail "a 255-byte output name failed"
"$cnf" sample --model m.h5 --n 5 --out "$long" --quiet || fail "rewriting a 255-byte output name failed"
long2=$(printf 'n%.0s' $(seq 1 242)).h5  # 245 bytes
"$cnf" toy moons --n 100 --out "$long2" --quiet || fail "a 245-byte output name failed"
utf=$(printf '\xc3\xa9%.0s' $(seq 1 125)).h5   # 253 bytes of two-byte characters
"$cnf" toy moons --n 100 --out "$utf" --quiet || fail "a 253-byte UTF-8 output name failed"
no_temporaries "long names"
cases=$((cases + 3))

# ---- Stale temporaries (item 9) ----------------------------------------------
# Leftovers of processes that are gone are removed by the next write of the
# same output (today's names and the old "<name>.tmp.<pid>[.<n>]"), those of a
# running process and of other outputs are not.
true & dead=$!
wait "$dead"
sleep 60 & sleeper=$!
"$cnf" toy moons --n 100 --out s.h5 --quiet
for f in "s.h5.cnf-tmp.$dead.0" "s.h5.tmp.$dead.3" "s.h5.tmp.$dead" "s.h5.cnf-tmp.$sleeper.0" \
         "other.h5.cnf-tmp.$dead.0" "s.h5.cnf-tmp.$dead.x"; do
    echo junk > "$f"
done
"$cnf" toy moons --n 100 --out s.h5 --quiet
for f in "s.h5.cnf-tmp.$dead.0" "s.h5.tmp.$dead.3" "s.h5.tmp.$dead"; do
    [ ! -e "$f" ] || fail "stale temporary $f was not removed"
done
for f in "s.h5.cnf-tmp.$sleeper.0" "other.h5.cnf-tmp.$dead.0" "s.h5.cnf-tmp.$dead.x"; do
    [ -e "$f" ] || fail "$f (not a stale temporary of s.h5) was removed"
    rm -f "$f"
done
kill "$sleeper"
wait "$sleeper" 2>/dev/null || true
sleeper=
cases=$((cases + 1))

# strace may be missing, or not allowed to trace (a container without ptrace)
if command -v strace >/dev/null && strace -o /dev/null true 2>/dev/null; then
    # at_syscall SIG CALL CMD...: run CMD with SIG delivered when it enters
    # CALL (the commit's fsync, before the rename) the first time (or at the
    # calls WHEN says, strace's syntax); prints the exit status.
    at_syscall() {
        local sig=$1 call=$2 rc=0
        shift 2
        strace -f -o /dev/null -e trace="$call" -e inject="$call":signal="$sig":when="${WHEN:-1}" "$@" \
            >/dev/null 2>stderr.txt || rc=$?
        echo "$rc"
    }
    # kill -9 during a save leaves a temporary; the next write removes it
    rc=$(at_syscall SIGKILL fsync "$cnf" toy moons --n 100 --out k.h5 --quiet)
    [ "$rc" = 137 ] || fail "toy under SIGKILL at fsync: status $rc"
    ls -a | has 'k\.h5\.cnf-tmp\.' || fail "SIGKILL at the commit left no temporary: is the test still testing?"
    "$cnf" toy moons --n 100 --out k.h5 --quiet
    no_temporaries "the write after a SIGKILL"
    [ -f k.h5 ] || fail "no k.h5 after the rewrite"
    # the same for a name at NAME_MAX, whose temporary name is cut
    rc=$(at_syscall SIGKILL fsync "$cnf" toy moons --n 100 --out "$long" --quiet)
    [ "$rc" = 137 ] || fail "toy (long name) under SIGKILL at fsync: status $rc"
    ls -a | has 'cnf-tmp\.' || fail "SIGKILL at the commit (long name) left no temporary"
    "$cnf" toy moons --n 100 --out "$long" --quiet
    no_temporaries "the write after a SIGKILL (long name)"
    # cnf train --save-every 1 killed in its second save: the next run's
    # first save removes the leftover
    rc=$(at_syscall SIGKILL fsync "$cnf" train --data data.h5 --hidden 4 --iters 4 --batch 20 \
        --save-every 1 --out tr.h5 --quiet)
    [ "$rc" = 137 ] || fail "train under SIGKILL at fsync: status $rc"
    ls -a | has 'tr\.h5\.cnf-tmp\.' || fail "SIGKILL in train's save left no temporary"
    "$cnf" train --data data.h5 --hidden 4 --iters 2 --batch 20 --out tr.h5 --quiet
    no_temporaries "train after a SIGKILL"
    cases=$((cases + 3))

    # SIGTERM and SIGINT in the middle of a commit: every command removes its
    # temporary and ends by the signal; the old output is untouched
    for sig in SIGTERM SIGINT; do
        want=$([ $sig = SIGTERM ] && echo 143 || echo 130)
        for cmd in "toy moons --n 100 --out o.h5" "convert d.csv --out o.h5" \
                   "sample --model m.h5 --n 5 --out o.h5" \
                   "eval --model m.h5 --data data.h5 --out o.h5" \
                   "grad --model m.h5 --data data.h5:/train --out o.h5" \
                   "plot --model m.h5 --size 4 --out o.h5"; do
            echo "old output" > o.h5
            # shellcheck disable=SC2086
            rc=$(at_syscall $sig fsync "$cnf" $cmd --quiet)
            [ "$rc" = "$want" ] || fail "cnf $cmd under $sig at the commit: status $rc, not $want"
            [ "$(cat o.h5)" = "old output" ] || fail "cnf $cmd under $sig changed the old output"
            no_temporaries "cnf $cmd under $sig"
            cases=$((cases + 1))
        done
    done
    # cnf train, SIGTERM at every fsync: the first (in the first --save-every
    # save, which completes) stops the training; the second, in the final
    # save, ends the process without a temporary, the checkpoint in place
    rm -f o.h5
    rc=$(WHEN=1+ at_syscall SIGTERM fsync "$cnf" train --data data.h5 --hidden 4 --iters 4 \
        --batch 20 --save-every 1 --out o.h5 --quiet)
    [ "$rc" = 143 ] || fail "train with SIGTERM in two saves: status $rc, not 143"
    "$cnf" info o.h5 | has "state: iteration 1," || fail "train with SIGTERM in two saves: no checkpoint"
    no_temporaries "train with SIGTERM in two saves"
    cases=$((cases + 1))
else
    echo "e2e_files: strace missing or not permitted, the signal cases are skipped"
fi

echo "e2e_files: all $cases cases passed"
