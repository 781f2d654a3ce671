#!/usr/bin/env bash
# The cnf demo: build (tools/build.sh installs what is missing and builds
# into build/), draw a 2-D toy data set, train FFJORD's toy preset briefly,
# evaluate on the test split, train the same density by flow matching and
# evaluate it, sample, and plot the learned density with the test points.
# Outputs go to demo-out/ (or $CNF_DEMO_DIR). A couple of minutes on 2
# cores. Set DEMO_ITERS / DEMO_SET to change the run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${CNF_BUILD_DIR:-$root/build}
out=${CNF_DEMO_DIR:-$root/demo-out}
iters=${DEMO_ITERS:-1500}
set_name=${DEMO_SET:-8gaussians}

echo "== building cnf (tools/build.sh; log in $build.log)"
"$root/tools/build.sh"
cnf="$build/cnf"
mkdir -p "$out"

echo "== toy data: $set_name, 5000 points -> $out/data.h5"
"$cnf" toy "$set_name" --n 5000 --seed 1 --out "$out/data.h5"

echo "== training flows/toy2d.cfg for $iters iterations -> $out/model.h5"
"$cnf" train --data "$out/data.h5" --flow "$root/flows/toy2d.cfg" --iters "$iters" \
    --val-every 50 --log-every 50 --threads 1 --out "$out/model.h5" --json > "$out/train.json"
cat "$out/train.json"

echo "== evaluating on /test -> $out/loglik.h5"
"$cnf" eval --model "$out/model.h5" --data "$out/data.h5:/test" --out "$out/loglik.h5"

echo "== the same density by flow matching (flows/toy2d-fm.cfg: regression, no ODE solve) -> $out/model-fm.h5"
"$cnf" train --data "$out/data.h5" --flow "$root/flows/toy2d-fm.cfg" --threads 1 \
    --out "$out/model-fm.h5" --quiet
"$cnf" eval --model "$out/model-fm.h5" --data "$out/data.h5:/test"

echo "== sampling 2000 points -> $out/samples.h5"
"$cnf" sample --model "$out/model.h5" --n 2000 --seed 2 --out "$out/samples.h5"

echo "== plotting the density with the test points -> $out/density.png"
"$cnf" plot --model "$out/model.h5" --data "$out/data.h5:/test" --size 160 --out "$out/density.png"
"$cnf" plot --model "$out/model.h5" --data "$out/samples.h5:/samples" --size 160 \
    --out "$out/samples.png" --quiet

"$cnf" info "$out/model.h5" | head -n 8
cat <<MSG

Done. Outputs in $out:
  data.h5      toy data set (/train, /val, /test)
  model.h5     trained model (cnf info $out/model.h5)
  model-fm.h5  the same density trained by flow matching
  train.json   training summary
  loglik.h5    per-row log-likelihood of /test (/loglik)
  samples.h5   2000 samples (/samples)
  density.png  learned density with the test points
  samples.png  learned density with the samples
MSG
