# e2e_lib.bash — what the end-to-end scripts (tests/e2e_*.sh) share, sourced
# first thing by each: strict mode; build (the directory holding `cnf`, the
# script's first argument), cnf, root (the repository); a temporary working
# directory removed on exit; and the helpers fail, has, json_num and
# expect_fail. (Not e2e_*.sh itself, so that ctest does not run it.)
set -euo pipefail
build=$(cd "${1:?usage: bash $0 BUILD_DIR (holding cnf)}" && pwd)
cnf="$build/cnf"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT   # KEEP=1 keeps the files for a look
cd "$tmp"

fail() { echo "FAIL: $*" >&2; exit 1; }
# grep -q would stop reading early and, under pipefail, a writer killed by
# SIGPIPE would fail the pipeline: read everything instead.
has() { grep "$@" >/dev/null; }
json_num() { # json_num KEY JSON -> the number
    sed -n "s/.*\"$1\": \([-+0-9.eE]*\).*/\1/p" <<<"$2"
}

# expect_fail PATTERN OUT -- CMD...: CMD must exit non-zero with PATTERN in
# its stderr; OUT (a file path, or - for none) must afterwards be
# byte-identical to what it was (here: a sentinel file), and no temporary
# file may be left in the directory. Counts the cases in $cases.
cases=0
expect_fail() {
    local pattern=$1 out=$2
    shift 3
    if [ "$out" != - ]; then printf 'sentinel %s\n' "$out" > "$out"; cp "$out" "$out.before"; fi
    local rc=0
    "$@" >stdout.txt 2>stderr.txt || rc=$?
    [ "$rc" -ne 0 ] || fail "exit 0 for: $* (stderr: $(cat stderr.txt))"
    grep -qiE -- "$pattern" stderr.txt \
        || fail "message lacks /$pattern/ for: $*; got: $(cat stderr.txt)"
    if [ "$out" != - ]; then
        cmp -s "$out" "$out.before" || fail "$out changed by the failing: $*"
        rm -f "$out" "$out.before"
    fi
    if ls -a | has -E '\.(cnf-)?tmp\.'; then fail "temporary file left by: $*"; fi
    [ -n "${VERBOSE:-}" ] && echo "ok: $(head -c 300 stderr.txt)"
    cases=$((cases + 1))
}
