#!/usr/bin/env bash
# The README's pictures from a fresh run: tools/demo.sh into a scratch
# directory, then its PNGs copied to docs/img/. Run from anywhere in the
# clone; a few minutes on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
CNF_DEMO_DIR="$scratch" "$root/tools/demo.sh"
mkdir -p "$root/docs/img"
for f in density samples trajectories curve penguins; do
    cp "$scratch/$f.png" "$root/docs/img/$f.png"
done
ls -l "$root/docs/img"
