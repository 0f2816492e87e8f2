#!/usr/bin/env bash
# PolypGen U-Net (synthetic stand-in unless dataset.root is given): certified sparsity and
# coverage for the three segmentation losses at alpha ∈ {0.05, 0.1}, delta = 0.1. The binary
# seg_fail uses the exact binomial p-value, the fractional losses Hoeffding–Bentkus.
# Writes experiments/results/polyp_table.csv and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
base=outputs/multiruns/polyp_table/$(date +%Y-%m-%d_%H-%M-%S)
common=(experiment=polyp calibration.alpha=0.05,0.1 calibration.delta=0.1 logger=none sweep.progress=false)
"$PY" -m confprune.run -m "${common[@]}" loss=seg_fail bound=binomial "hydra.sweep.dir=$base/binary" "$@"
"$PY" -m confprune.run -m "${common[@]}" loss=seg_disagreement,seg_miss bound=hb "hydra.sweep.dir=$base/fractional" "$@"
"$PY" -m confprune.figures "$base" --out "$base/aggregate" >/dev/null
mkdir -p experiments/results
cp "$base/aggregate/results.csv" experiments/results/polyp_table.csv
"$PY" - "$base" <<'PYEOF'
import json, pathlib, sys
import pandas as pd
t = pd.read_csv("experiments/results/polyp_table.csv")
cols = ["loss", "bound", "alpha", "sparsity_hat_median", "sparsity_hat_deploy", "coverage", "iid_coverage", "certified_fraction"]
print(t[cols].sort_values(["loss", "alpha"]).to_string(index=False, float_format="%.3f"))
for p in sorted(pathlib.Path(sys.argv[1]).rglob("summary.json")):
    s = json.loads(p.read_text())
    print(p.parent.relative_to(sys.argv[1]), s["loss"], s["alpha"], "dense", s["dense"], "timing", {k: round(v, 1) for k, v in s["timing"].items()},
          "model cached" if s["model_from_cache"] else "model trained", "table cached" if s["loss_table_from_cache"] else "table computed")
PYEOF
