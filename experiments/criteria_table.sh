#!/usr/bin/env bash
# Criteria comparison table and figure (issues 5, 14): runs experiment=criteria_mnist (42 jobs:
# seven criteria, channel included; the network runs once per criterion), aggregates it, writes
# experiments/results/criteria_mnist.csv (with MACs and the runs' own latencies) plus the figures
# under the sweep's aggregate/figures, prints the README table, and times the certified models
# of label_01 at α = 0.05 against the dense one, interleaved in one process
# (benchmarks/bench_structured.py --runs → experiments/results/criteria_mnist_latency.md).
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
t = t.drop(columns=[c for c in ("spread", "nonzero_macs_M", "macs_M", "latency_b500_ms", "latency_b500_dense_ms")
                    if c in t])  # idempotent: the columns this block adds
from confprune.record import read_summary
# the 5–95% spread over ALL splits, an uncertified split counting as 0 (as the median does)
t["spread"] = t[["sparsity_all_q05", "sparsity_all_q95"]].round(3).values.tolist()
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
# The README table: median certified sparsity [5–95%] (i.i.d. coverage), and MACs at label_01 α = 0.05.
names = {("magnitude", "global"): "magnitude", ("magnitude", "layerwise"): "layer-wise magnitude", ("mu", "global"): "M&U",
         ("sipp", "global"): "SiPP", ("sipp_hybrid", "global"): "SiPP hybrid", ("random", "global"): "random",
         ("l1", "global"): "channel (L1, structured)"}
cells = [(l, a) for l in ("label_01", "disagreement") for a in (0.01, 0.03, 0.05)]
print("\n| criterion | " + " | ".join(f"{'label_01' if l == 'label_01' else 'disagr.'} α={a:g}" for l, a in cells)
      + " | MACs at label_01 α=0.05: executed (nonzero) |")
print("|---" * (len(cells) + 2) + "|")
for (crit, scope), name in names.items():
    row = []
    for loss, alpha in cells:
        r = t[(t.criterion == crit) & (t.scope == scope) & (t.loss == loss) & ((t.alpha - alpha).abs() < 1e-9)].iloc[0]
        q = r.spread.strip("[]").split(",") if isinstance(r.spread, str) else r.spread
        row.append(f"{r.sparsity_hat_median + 1e-9:.2f} [{float(q[0]) + 1e-9:.2f}–{float(q[1]) + 1e-9:.2f}] ({r.iid_coverage:.2f})")
    r = t[(t.criterion == crit) & (t.scope == scope) & (t.loss == "label_01") & ((t.alpha - 0.05).abs() < 1e-9)].iloc[0]
    row.append(f"{r.macs_M:.2f}M ({r.nonzero_macs_M:.2f}M)")
    print(f"| {name} | " + " | ".join(row) + " |")
PYEOF
jobs=$("$PY" - <<'PYEOF'
import pandas as pd
t = pd.read_csv("experiments/results/criteria_mnist.csv")
sel = t[(t.loss == "label_01") & ((t.alpha - 0.05).abs() < 1e-9)]
print(" ".join(sel.job_dir))
PYEOF
)
"$PY" benchmarks/bench_structured.py --runs $jobs --threads 1 --rounds 5 | tee experiments/results/criteria_mnist_latency.md
