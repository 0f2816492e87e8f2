#!/usr/bin/env bash
# Certification table (issue 15): what the naive plug-in choice of λ risks next to LTT's certificate,
# for the MNIST CNN, the paper's MNIST MLP and the Fashion-MNIST CNN (label_01 and disagreement) and
# the polyp U-Net (seg_fail), α ∈ {0.01, 0.03, 0.05, 0.1}, δ = 0.05, 1000 splits of each run's
# n_cal/n_test. One run per (experiment, loss), run one after the other: the network runs once per
# model (the other loss comes out of the same pass, cached) and every α is computed from the run's
# loss table by experiments/certification_table.py.
# Writes experiments/results/certification_table.{csv,md,png} and prints the table.
# Usage: bash experiments/certification_table.sh [BASE_DIR]  (a finished BASE_DIR is reused as is)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
base=${1:-outputs/certification_table/$(date +%Y-%m-%d_%H-%M-%S)}
common=(calibration.delta=0.05 logger=none figures=false sweep.progress=false)
dirs=()
run() {  # run NAME OVERRIDES...: one single run into $base/NAME
  local name=$1
  shift
  "$PY" -m confprune.run "$@" "${common[@]}" "hydra.run.dir=$base/$name"
  dirs+=("$base/$name")
}
# The run's own α only sets which certified model the run exports and times (MACs, latency).
run mnist-label_01 experiment=mnist loss=label_01 calibration.alpha=0.05
run mnist-disagreement experiment=mnist loss=disagreement calibration.alpha=0.05
run mnist_paper_mlp-label_01 experiment=mnist_paper_mlp loss=label_01 calibration.alpha=0.05
run mnist_paper_mlp-disagreement experiment=mnist_paper_mlp loss=disagreement calibration.alpha=0.05
run fashion-label_01 experiment=fashion loss=label_01 calibration.alpha=0.1
run fashion-disagreement experiment=fashion loss=disagreement calibration.alpha=0.05
run polyp-seg_fail experiment=polyp loss=seg_fail calibration.alpha=0.1
"$PY" experiments/certification_table.py "${dirs[@]}" --out experiments/results
