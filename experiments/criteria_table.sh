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
from confprune.record import read_summary
t["spread"] = t["job_dir"].map(lambda d: pd.read_csv(f"{d}/splits.csv")["sparsity_hat"].quantile([0.05, 0.95]).round(3).tolist())
def cost(d):
    c = read_summary(d).cost
    dep, dense = c.get("deploy") or {}, c.get("dense") or {}
    lat = (dep.get("latency") or {}).get("batch_500", {}).get("median_s")
    lat_d = (dense.get("latency") or {}).get("batch_500", {}).get("median_s")
    return pd.Series({"nonzero_macs_M": (dep.get("nonzero_macs") or float("nan")) / 1e6,
                      "macs_M": (dep.get("macs") or float("nan")) / 1e6,
                      "latency_b500_ms": 1e3 * lat if lat else float("nan"),
                      "latency_b500_dense_ms": 1e3 * lat_d if lat_d else float("nan")})
t = t.join(t["job_dir"].apply(cost))
t.to_csv("experiments/results/criteria_mnist.csv", index=False)
cols = ["loss", "alpha", "criterion", "scope", "sparsity_hat_median", "spread", "iid_coverage", "certified_fraction",
        "nonzero_macs_M", "macs_M", "latency_b500_ms", "latency_b500_dense_ms"]
print(t[cols].sort_values(["loss", "alpha", "sparsity_hat_median"], ascending=[True, True, False]).to_string(index=False, float_format="%.3f"))
PYEOF
