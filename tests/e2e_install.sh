#!/usr/bin/env bash
# Install test: `cmake --install` into a temporary prefix, then, as a user
# would, build examples/loglik.c against it once through pkg-config and once
# through find_package(cnf), run both, and check that
#   - they print `cnf eval`'s log-likelihoods bit for bit (the model is
#     trained at tolerances other than the library's defaults, so this needs
#     cnf_flow_options_from_model);
#   - cblas_dgemm binds to OpenBLAS, not GSL's reference CBLAS (LD_DEBUG);
#   - the installed `cnf` finds its preset by name (--flow toy2d) from any
#     directory, and the link lines never name gslcblas.
# Usage: bash tests/e2e_install.sh BUILD_DIR (a configured and built tree).
set -euo pipefail
build=$(cd "${1:?usage: e2e_install.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
fail() { echo "FAIL: $*" >&2; exit 1; }

# A sanitizer build's libcnf needs its runtime loaded first, which a plain
# program built against the install does not do: nothing to test there.
if [ -e "$build/libcnf.so" ] && readelf -d "$build/libcnf.so" | grep -qE 'lib(a|ub|t)san'; then
    echo "install test: skipped (sanitizer build)"
    exit 77
fi
shared=0
[ -e "$build/libcnf.so" ] && shared=1

prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >install.log 2>&1 || { cat install.log; fail "install"; }
pc=$(find "$prefix" -name cnf.pc | head -n 1)
[ -n "$pc" ] || fail "the install has no cnf.pc"
lib=$(dirname "$(dirname "$pc")")   # lib, or lib/<multiarch> for the prefix /usr
for f in bin/cnf include/cnf/flow.h include/cnf/csv.h share/cnf/flows/toy2d.cfg \
         "${lib#"$prefix"/}/cmake/cnf/cnfConfig.cmake"; do
    [ -e "$prefix/$f" ] || fail "the install has no $f"
done
if [ $shared = 1 ]; then
    [ -e "$lib/libcnf.so.0.2" ] || fail "no shared libcnf.so.0.2 with its soname"
    readelf -d "$lib/libcnf.so" | grep -q 'SONAME.*libcnf\.so\.0\.2\]' || fail "libcnf.so: soname"
else
    [ -e "$lib/libcnf.a" ] || fail "no libcnf.a in a static build's install"
fi

# The installed command, run away from the source tree and with no hint
# where presets are, finds toy2d in <prefix>/share/cnf/flows.
cnf=$prefix/bin/cnf
mkdir run && cd run
env -u CNF_FLOWS_PATH "$cnf" toy 8gaussians --n 600 --seed 4 --out toy.h5 --quiet
env -u CNF_FLOWS_PATH "$cnf" train --data toy.h5 --flow toy2d --hidden 8-8 --batch 50 --iters 8 \
    --val-every 4 --rtol 1e-7 --atol 1e-9 --out m.h5 --quiet
"$cnf" info m.h5 | grep -q "preset .*$prefix/share/cnf/flows/toy2d.cfg" \
    || fail "installed cnf did not take the installed preset: $("$cnf" info m.h5 | grep preset)"
"$cnf" eval --model m.h5 --data toy.h5:/test --out ll.csv --quiet >/dev/null
tail -n +2 ll.csv >expected.txt
[ "$(wc -l <expected.txt)" = 60 ] || fail "eval wrote $(wc -l <expected.txt) values, not 60"

# pkg-config: compile and link with exactly what cnf.pc says.
export PKG_CONFIG_PATH=$lib/pkgconfig
static=$(pkg-config --static --libs cnf)
if [ $shared = 1 ]; then flags=$(pkg-config --cflags --libs cnf)
else flags="$(pkg-config --cflags cnf) $static"; fi
case "$flags $static" in *gslcblas*) fail "cnf.pc links gslcblas: $flags / $static" ;; esac
case "$flags" in *-lopenblas*) ;; *) fail "cnf.pc does not link OpenBLAS: $flags" ;; esac
# shellcheck disable=SC2086
cc "$root/examples/loglik.c" $flags -o loglik-pc || fail "build through pkg-config"

# find_package(cnf): a separate CMake project.
cmake -S "$root/tests/install" -B consumer -DCMAKE_PREFIX_PATH="$prefix" \
    -DLOGLIK_SOURCE="$root/examples/loglik.c" >consumer.log 2>&1 \
    || { cat consumer.log; fail "find_package(cnf)"; }
cmake --build consumer >>consumer.log 2>&1 || { cat consumer.log; fail "build through CMake"; }

for prog in ./loglik-pc consumer/loglik; do
    LD_LIBRARY_PATH=$lib "$prog" m.h5 toy.h5:/test >got.txt || fail "$prog failed"
    cmp -s got.txt expected.txt \
        || fail "$prog differs from cnf eval: $(paste got.txt expected.txt | head -3)"
    LD_LIBRARY_PATH=$lib LD_DEBUG=bindings "$prog" m.h5 toy.h5:/test 2>bind.txt >/dev/null
    grep "normal symbol \`cblas_dgemm'" bind.txt >dgemm.txt || fail "$prog: cblas_dgemm never bound"
    if grep -v "to [^ ]*openblas[^ ]*" dgemm.txt >/dev/null; then
        fail "$prog: cblas_dgemm binds elsewhere than OpenBLAS: $(grep -v openblas dgemm.txt | head -2)"
    fi
done
echo "install test: pkg-config and find_package builds match cnf eval; cblas_dgemm -> OpenBLAS"
