#!/usr/bin/env bash
# Certified efficiency (issue 14): for the MNIST CNN (label_01 and disagreement, α ∈ {0.03, 0.05})
# and the polyp U-Net (seg_fail, α = 0.1), δ = 0.05 (polyp: 0.1, its experiment's setting),
# unstructured global magnitude vs channel pruning (L1, global): certified sparsity, parameters,
# MACs, compact export bytes and one-thread CPU latency (batch 1 and the sweep batch) of the dense
# and the certified model. Writes experiments/results/efficiency_table.csv and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
stamp=$(date +%Y-%m-%d_%H-%M-%S)
mnist=outputs/multiruns/efficiency_mnist/$stamp
polyp=outputs/multiruns/efficiency_polyp/$stamp
"$PY" -m confprune.run -m name=efficiency_mnist experiment=mnist pruning=magnitude,channel \
  loss=label_01,disagreement calibration.alpha=0.03,0.05 calibration.delta=0.05 \
  logger=none sweep.progress=false "hydra.sweep.dir=$mnist" "$@"
# The polyp experiment keeps BatchNorm out of the unstructured pool (pruning.include_norm=false);
# a removed channel takes its BatchNorm with it, so the channel run states include_norm=true.
"$PY" -m confprune.run -m name=efficiency_polyp experiment=polyp pruning=magnitude \
  logger=none sweep.progress=false "hydra.sweep.dir=$polyp/magnitude" "$@"
"$PY" -m confprune.run -m name=efficiency_polyp experiment=polyp pruning=channel pruning.include_norm=true \
  logger=none sweep.progress=false "hydra.sweep.dir=$polyp/channel" "$@"
"$PY" experiments/efficiency_table.py "$mnist" "$polyp"
