#!/usr/bin/env bash
# The cnf demo: build (tools/build.sh installs what is missing and builds
# into build/), draw a 2-D toy data set, train FFJORD's toy preset briefly
# (with its training curves), evaluate on the test split, train the same
# density by flow matching and evaluate it, sample, and draw the pictures:
# the learned density with the test points, the data beside model samples,
# the paths from data to the base, and for a 4-D data set (penguins) the
# grid of 2-D marginals. Outputs go to demo-out/ (or $CNF_DEMO_DIR); the
# README's pictures are these (tools/figures.sh). A couple of minutes on 2
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
    --val-every 50 --log-every 50 --threads 1 --curve "$out/curve.png" --out "$out/model.h5" \
    --json > "$out/train.json"
cat "$out/train.json"

echo "== evaluating on /test -> $out/loglik.h5"
"$cnf" eval --model "$out/model.h5" --data "$out/data.h5:/test" --out "$out/loglik.h5"

echo "== the same density by flow matching (flows/toy2d-fm.cfg: regression, no ODE solve) -> $out/model-fm.h5"
"$cnf" train --data "$out/data.h5" --flow "$root/flows/toy2d-fm.cfg" --threads 1 \
    --out "$out/model-fm.h5" --quiet
"$cnf" eval --model "$out/model-fm.h5" --data "$out/data.h5:/test"

echo "== sampling 2000 points -> $out/samples.h5"
"$cnf" sample --model "$out/model.h5" --n 2000 --seed 2 --out "$out/samples.h5"

echo "== pictures: the density with the test points, the data beside samples, paths to the base"
"$cnf" plot --model "$out/model.h5" --data "$out/data.h5:/test" --out "$out/density.png"
"$cnf" plot --model "$out/model.h5" --data "$out/data.h5:/test" --samples 1000 --seed 2 \
    --out "$out/samples.png"
"$cnf" plot --model "$out/model.h5" --data "$out/data.h5:/test" --trajectories 150 --seed 3 \
    --out "$out/trajectories.png"

echo "== a 4-D data set: penguins by flow matching (flows/small-fm.cfg), its marginal grid"
"$cnf" train --data "$root/datasets/penguins.h5" --flow "$root/flows/small-fm.cfg" --threads 1 \
    --out "$out/penguins.h5" --quiet
"$cnf" eval --model "$out/penguins.h5" --data "$root/datasets/penguins.h5"
"$cnf" plot --model "$out/penguins.h5" --data "$root/datasets/penguins.h5:/train" --samples 1000 \
    --out "$out/penguins.png"

"$cnf" info "$out/model.h5" | head -n 8
cat <<MSG

Done. Outputs in $out:
  data.h5      toy data set (/train, /val, /test)
  model.h5     trained model (cnf info $out/model.h5)
  model-fm.h5  the same density trained by flow matching
  train.json   training summary
  loglik.h5    per-row log-likelihood of /test (/loglik)
  samples.h5   2000 samples (/samples)
  curve.png    training curves of model.h5 (loss, validation NLL, NFE, seconds per iteration)
  density.png  learned log-density with the test points
  samples.png  the test points, the density and 1000 model samples
  trajectories.png  the density and the paths of 150 test points to the base
  penguins.h5  a 4-D model of datasets/penguins.h5 (flow matching)
  penguins.png its grid of 2-D marginals: data below the diagonal, samples above
MSG
