#!/usr/bin/env bash
# Certified sparsity and coverage on MNIST: {CNN, paper MLP} × {label_01, disagreement} ×
# alpha ∈ {0.01, 0.03, 0.05} × {binomial, HB}, delta = 0.05, 1000 splits of 9000/1000.
# The network runs once per (model, loss): every other job reuses the cached loss table.
# Writes experiments/results/mnist_table.csv and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
sweep_dir=outputs/multiruns/mnist_table/$(date +%Y-%m-%d_%H-%M-%S)
"$PY" -m confprune.run -m name=mnist_table \
  experiment=mnist,mnist_paper_mlp loss=label_01,disagreement \
  calibration.alpha=0.01,0.03,0.05 calibration.delta=0.05 bound=binomial,hb \
  logger=none figures=false sweep.progress=false \
  "hydra.sweep.dir=$sweep_dir" "$@"
"$PY" -m confprune.figures "$sweep_dir" --out "$sweep_dir/aggregate"
cp "$sweep_dir/aggregate/results.csv" experiments/results/mnist_table.csv
"$PY" - <<'PYEOF'
import pandas as pd
t = pd.read_csv("experiments/results/mnist_table.csv")
cols = ["model", "loss", "alpha", "bound", "sparsity_hat_median", "sparsity_hat_deploy", "coverage", "iid_coverage", "certified_fraction"]
print(t[cols].sort_values(["model", "loss", "alpha", "bound"]).to_string(index=False, float_format="%.3f"))
PYEOF
