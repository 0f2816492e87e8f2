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
for cert_path in sorted(Path(sys.argv[1]).glob("*/certificate.json")):
    cert, summary = json.loads(cert_path.read_text()), json.loads((cert_path.parent / "summary.json").read_text())
    p, cost = cert["pareto"], summary["cost"]
    label = p["labels"][p["certified_family"]] if cert["certified"] else None
    single = {s["knob"]: s for s in cost["single_family"]}
    best = cost["best_single_family"]
    rows.append({"objective": p["objective"], "certified": label, "lambda": cert["lambda_hat"],
                 "cost": p["certified_cost"], "best_single_knob_cost": best,
                 "gain": (best / p["certified_cost"]) if p["certified_cost"] and best else None,
                 **{f"single[{k}]": f"λ={v['lambda']}, cost={v['cost']}" for k, v in single.items()},
                 "iid_coverage": summary["iid_coverage"], "iid_reps": summary["n_splits"],
                 "certified_fraction": summary["certified_fraction"]})
    fig = cert_path.parent / "figures" / "pareto_front.png"
    if fig.exists():
        (Path("experiments/results") / f"pareto_front_{p['objective']}.png").write_bytes(fig.read_bytes())
t = pd.DataFrame(rows)
t.to_csv("experiments/results/pareto_mnist.csv", index=False)
with pd.option_context("display.width", 250, "display.max_columns", 30):
    print(t.to_string(index=False))
PYEOF
