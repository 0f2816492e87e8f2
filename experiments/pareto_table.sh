#!/usr/bin/env bash
# Multi-knob certification (issue 16) on the MNIST CNN, δ = 0.05, label_01 ≤ 0.03: Pareto testing
# over {unstructured magnitude, channel L1} × {float, int8 Linear} × λ ∈ {0, 0.01, …, 0.99}, once
# with executed MACs and once with measured one-thread latency (batch 500) as the cost; each knob
# certified alone on the same calibration set for comparison. Writes
# experiments/results/pareto_mnist.csv (one row per objective) and copies the front figures.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
sweep=outputs/multiruns/pareto_mnist/$(date +%Y-%m-%d_%H-%M-%S)
"$PY" -m confprune.run -m experiment=pareto_mnist knobs.objective=macs,latency logger=none \
  sweep.progress=false "hydra.sweep.dir=$sweep" "$@"
mkdir -p experiments/results
"$PY" - "$sweep" <<'PYEOF'
import json, sys
from pathlib import Path
import pandas as pd
rows = []
for rec in sorted(Path(sys.argv[1]).glob("*/pareto.json")):
    r = json.loads(rec.read_text())
    c = r["configuration"] or {}
    single = {s["knob"]: s for s in r["single_knob"]}
    rows.append({"objective": r["objective"], "certified": c.get("label"), "lambda": c.get("lambda"),
                 "cost": c.get("cost"), "best_single_knob_cost": r["best_single_knob_cost"],
                 "gain": (r["best_single_knob_cost"] / c["cost"]) if c.get("cost") and r["best_single_knob_cost"] else None,
                 **{f"single[{k}]": f"λ={v['lambda']}, cost={v['cost']}" for k, v in single.items()},
                 "iid_coverage": r["iid_check"]["coverage"], "iid_reps": r["iid_check"]["reps"],
                 "certified_fraction": r["iid_check"]["certified_fraction"]})
    fig = rec.parent / "figures" / "pareto_front.png"
    if fig.exists():
        (Path("experiments/results") / f"pareto_front_{r['objective']}.png").write_bytes(fig.read_bytes())
t = pd.DataFrame(rows)
t.to_csv("experiments/results/pareto_mnist.csv", index=False)
with pd.option_context("display.width", 250, "display.max_columns", 30):
    print(t.to_string(index=False))
PYEOF
