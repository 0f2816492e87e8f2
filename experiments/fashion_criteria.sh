#!/usr/bin/env bash
# Criteria comparison on Fashion-MNIST (issue 15): runs experiment=criteria_fashion (84 jobs: seven
# criteria (channel L1 included) × two losses × six α; the network runs once per criterion, M&U trains its own model),
# aggregates it and writes experiments/results/criteria_fashion.csv and criteria_fashion.png, then
# prints the README table (label_01 at α ∈ {0.1, 0.15, 0.2}, disagreement at α ∈ {0.01, 0.03, 0.05}).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
sweep_dir=${SWEEP_DIR:-outputs/multiruns/criteria_fashion/$(date +%Y-%m-%d_%H-%M-%S)}
"$PY" -m confprune.run experiment=criteria_fashion "hydra.sweep.dir=$sweep_dir" "$@"
"$PY" -m confprune.figures "$sweep_dir" --out "$sweep_dir/aggregate" >/dev/null
mkdir -p experiments/results
cp "$sweep_dir/aggregate/results.csv" experiments/results/criteria_fashion.csv
cp "$sweep_dir/aggregate/figures/criteria_comparison.png" experiments/results/criteria_fashion.png
"$PY" - <<'PYEOF'
import pandas as pd

t = pd.read_csv("experiments/results/criteria_fashion.csv")
names = {("magnitude", "global"): "magnitude", ("magnitude", "layerwise"): "layer-wise magnitude", ("mu", "global"): "M&U",
         ("sipp", "global"): "SiPP", ("sipp_hybrid", "global"): "SiPP hybrid", ("random", "global"): "random",
         ("l1", "global"): "channel L1"}
cols = [("label_01", 0.1), ("label_01", 0.15), ("label_01", 0.2), ("disagreement", 0.01), ("disagreement", 0.03), ("disagreement", 0.05)]


def cell(row):
    # median and 5–95% over ALL splits, an uncertified split counting as 0 (one definition)
    return f"{row.sparsity_hat_median:.2f} [{row.sparsity_all_q05:.2f}–{row.sparsity_all_q95:.2f}] ({row.iid_coverage:.2f})"


head = "| criterion | " + " | ".join(f"{'label_01' if l == 'label_01' else 'disagr.'} α={a:g}" for l, a in cols) + " |"
print(head)
print("|---" * (len(cols) + 1) + "|")
for (crit, scope), name in names.items():
    cells = []
    for loss, alpha in cols:
        sel = t[(t.criterion == crit) & (t.scope == scope) & (t.loss == loss) & ((t.alpha - alpha).abs() < 1e-9)]
        cells.append(cell(sel.iloc[0]) if len(sel) else "n/a")
    print(f"| {name} | " + " | ".join(cells) + " |")
PYEOF
