#!/usr/bin/env bash
# End-to-end test of writing on a full disk (issue 11, item 3): on a small
# tmpfs filled to several levels, every command that writes either succeeds
# with a readable file or exits 1 naming the problem ("No space left on
# device"), never by a signal (HDF5 1.10 crashed in its exit handler after a
# failed close) and without HDF5's own messages; an existing output is left
# byte-identical and no temporary file stays behind.
# Needs root (it mounts a tmpfs): otherwise, or when the mount fails (a
# container without the capability), it exits 77, which ctest reports as
# skipped.
# Usage: bash tests/e2e_disk_full.sh BUILD_DIR (holding `cnf`).
set -euo pipefail
build=$(cd "${1:?usage: e2e_disk_full.sh BUILD_DIR}" && pwd)
cnf="$build/cnf"
if [ "$(id -u)" != 0 ]; then
    echo "e2e_disk_full: skipped: needs root to mount a tmpfs"
    exit 77
fi
tmp=$(mktemp -d)
disk="$tmp/disk"
mkdir "$disk"
if ! mount -t tmpfs -o size=512k tmpfs "$disk" 2>/dev/null; then
    rmdir "$disk"
    rm -rf "$tmp"
    echo "e2e_disk_full: skipped: cannot mount a tmpfs here"
    exit 77
fi
trap 'umount "$disk" 2>/dev/null; rm -rf "$tmp"' EXIT
cd "$tmp"
fail() { echo "FAIL: $*" >&2; exit 1; }
has() { grep "$@" >/dev/null; }
cases=0

"$cnf" toy moons --n 400 --out data.h5 --quiet
"$cnf" train --data data.h5 --hidden 8 --iters 2 --batch 20 --val-every 2 --out m.h5 --quiet
awk 'BEGIN { srand(3); for (i = 0; i < 300; i++) printf "%.6f,%.6f\n", rand(), rand() }' > d.csv

# fill_leaving KB: fill the tmpfs so that about KB KiB stay free.
fill_leaving() {
    local avail
    avail=$(df --output=avail -k "$disk" | tail -n 1 | tr -d ' ')
    if [ "$avail" -gt "$1" ]; then
        dd if=/dev/zero of="$disk/fill" bs=1k count=$((avail - $1)) 2>/dev/null || true
    fi
}

# on_full_disk OUT OLD -- CMD...: run CMD writing OUT on the tmpfs. OLD is a
# file to put at OUT before filling (or - for none). Exit 0 needs a readable
# OUT (h5dump for HDF5, the PNG signature otherwise); exit 1 needs "No space
# left on device" in the message and OUT unchanged; anything else fails.
on_full_disk() {
    local out=$1 old=$2 free=$3
    shift 4
    rm -rf "${disk:?}"/*
    [ "$old" = - ] || cp "$old" "$out"
    fill_leaving "$free"
    local rc=0
    "$@" >stdout.txt 2>stderr.txt || rc=$?
    case $rc in
    0)
        if [ "${out##*.}" = png ]; then
            head -c 8 "$out" | od -An -c | has 'P   N   G' || fail "$* wrote an unreadable PNG"
        else
            h5dump -H "$out" >/dev/null 2>&1 || fail "$* exited 0 but $out does not read"
        fi ;;
    1)
        has "No space left on device" stderr.txt \
            || fail "$* (free ${free}K): message lacks the reason: $(cat stderr.txt)"
        # one message, not a library's own besides (libpng printed one)
        [ "$(grep -cv '^warning\|: warning: ' stderr.txt)" = 1 ] \
            || fail "$* (free ${free}K): more than the one error line: $(cat stderr.txt)"
        if [ "$old" = - ]; then
            [ ! -e "$out" ] || fail "$* (free ${free}K) left a partial $out"
        else
            cmp -s "$out" "$old" || fail "$* (free ${free}K) changed the existing $out"
        fi ;;
    *)
        fail "$* (free ${free}K): exit status $rc: $(cat stderr.txt)" ;;
    esac
    if has -i "HDF5" stderr.txt; then fail "$* (free ${free}K): HDF5 printed: $(cat stderr.txt)"; fi
    if ls -a "$disk" | has 'cnf-tmp\.'; then fail "$* (free ${free}K) left a temporary file"; fi
    cases=$((cases + 1))
}

# The levels: nothing free, then a few pages, where HDF5's own close used to
# be what ran out of space.
for free in 0 4 8 12 16 24; do
    on_full_disk "$disk/S.h5" - "$free" -- "$cnf" sample --model m.h5 --n 10 --out "$disk/S.h5" --quiet
    on_full_disk "$disk/S.h5" - "$free" -- "$cnf" sample --model m.h5 --n 1000 --out "$disk/S.h5" --quiet
    on_full_disk "$disk/M.h5" m.h5 "$free" -- "$cnf" train --data data.h5 --hidden 8 --iters 2 --batch 20 \
        --val-every 2 --out "$disk/M.h5" --quiet
    on_full_disk "$disk/M.h5" m.h5 "$free" -- "$cnf" train --data data.h5 --hidden 8 --iters 3 --batch 20 \
        --save-every 1 --out "$disk/M.h5" --quiet
    on_full_disk "$disk/L.h5" - "$free" -- "$cnf" eval --model m.h5 --data data.h5 --out "$disk/L.h5" --quiet
    on_full_disk "$disk/T.h5" - "$free" -- "$cnf" toy moons --n 2000 --out "$disk/T.h5" --quiet
    on_full_disk "$disk/C.h5" - "$free" -- "$cnf" convert d.csv --out "$disk/C.h5" --quiet
    on_full_disk "$disk/P.png" - "$free" -- "$cnf" plot --model m.h5 --size 64 --out "$disk/P.png" --quiet
done
# at least the full disk must have failed: the test tests something
rm -rf "${disk:?}"/*
fill_leaving 0
rc=0
"$cnf" sample --model m.h5 --n 1000 --out "$disk/S.h5" --quiet 2>/dev/null || rc=$?
[ "$rc" = 1 ] || fail "sample on a full disk exited $rc"

echo "e2e_disk_full: all $cases cases passed"
