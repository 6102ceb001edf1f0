#!/usr/bin/env bash
# Reproduce every figure of docs/RESULTS.md. Each experiment writes runs/experiments/<name>/
# (per-run metrics, results.md, results.json, plots); its results.md, results.json and plots are
# then copied into docs/results/<name>/. `bash scripts/results.sh sim` runs only the simulator
# experiments (minutes); `loop` only the real tiny-model loop (about an hour on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
KRL=${KRL:-.venv/bin/krl}
what=${1:-all}

publish() {
  local name=$1
  mkdir -p "docs/results/$name"
  cp "runs/experiments/$name"/{results.md,results.json,*.png} "docs/results/$name/"
}

experiment() {
  local name=$1; shift
  "$KRL" experiment --out "runs/experiments/$name" "$@"
  publish "$name"
}

if [[ $what == all || $what == sim ]]; then
  # the default population and learning model
  experiment sim-default --seeds 5 --steps 1000
  # the same with the evidence half-life of `krl up` (100 steps) instead of the allocator's 20
  experiment sim-halflife100 --seeds 5 --steps 1000 --half-life-steps 100 \
    --title "simulator, population beta:0.2,0.4, M=64, B=512, half-life 100"
  # a fixed population: effective ratios that depend on no learning model; with and without decay
  experiment sim-static --seeds 5 --steps 500 --lr-shared 0 --lr-own 0 \
    --title "simulator, fixed population beta:0.2,0.4 (no learning), half-life 20"
  experiment sim-static-nodecay --seeds 5 --steps 500 --lr-shared 0 --lr-own 0 --half-life-steps 0 \
    --title "simulator, fixed population beta:0.2,0.4 (no learning), evidence never decays"
  # the learning model's loss aggregation: the trainer's token mean instead of a constant divisor
  experiment sim-token-mean --seeds 5 --steps 1000 --loss-agg token-mean \
    --title "simulator, population beta:0.2,0.4, token-mean loss aggregation"
fi
if [[ $what == all || $what == loop ]]; then
  experiment loop-reverse --backend loop --seeds 3 --steps 150
fi
