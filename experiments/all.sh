#!/usr/bin/env bash
# Regenerate every figure and table of the project (see experiments/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m confprune.run experiment=mnist
"$PY" -m confprune.run experiment=mnist_paper_mlp
bash experiments/mnist_table.sh
bash experiments/criteria_table.sh
bash experiments/polyp_table.sh
bash experiments/certification_table.sh
bash experiments/fashion_criteria.sh
"$PY" experiments/mu_variants.py
bash experiments/efficiency_table.sh
bash experiments/pareto_table.sh
bash experiments/risks_table.sh
for exp in sweep_mnist_alpha sweep_mnist_lambda; do
  dir=outputs/multiruns/$exp/$(date +%Y-%m-%d_%H-%M-%S)
  "$PY" -m confprune.run "experiment=$exp" "hydra.sweep.dir=$dir"
  "$PY" -m confprune.figures "$dir"
done
"$PY" experiments/coverage_vs_test_size.py "$(ls -d outputs/runs/mnist/*/ | tail -1)"
"$PY" experiments/certify_your_model.py
