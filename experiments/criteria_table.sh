#!/usr/bin/env bash
# Criteria comparison table and figure (issue 5): runs experiment=criteria_mnist (36 jobs; the
# network runs once per criterion and loss), aggregates it, and writes
# experiments/results/criteria_mnist.csv plus the figures under the sweep's aggregate/figures.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
sweep_dir=outputs/multiruns/criteria_mnist/$(date +%Y-%m-%d_%H-%M-%S)
"$PY" -m confprune.run experiment=criteria_mnist "hydra.sweep.dir=$sweep_dir" "$@"
"$PY" -m confprune.figures "$sweep_dir" --out "$sweep_dir/aggregate" >/dev/null
mkdir -p experiments/results
cp "$sweep_dir/aggregate/results.csv" experiments/results/criteria_mnist.csv
cp "$sweep_dir/aggregate/figures/criteria_comparison.png" experiments/results/criteria_mnist.png
"$PY" - <<'PYEOF'
import pandas as pd
t = pd.read_csv("experiments/results/criteria_mnist.csv")
t["spread"] = t["job_dir"].map(lambda d: pd.read_csv(f"{d}/splits.csv")["sparsity_hat"].quantile([0.05, 0.95]).round(3).tolist())
cols = ["loss", "alpha", "criterion", "scope", "sparsity_hat_median", "spread", "coverage", "iid_coverage", "certified_fraction"]
print(t[cols].sort_values(["loss", "alpha", "sparsity_hat_median"], ascending=[True, True, False]).to_string(index=False, float_format="%.3f"))
PYEOF
