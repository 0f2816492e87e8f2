#!/usr/bin/env bash
# Several risks and the accuracy drop (issue 16), δ = 0.05, 1000 splits of 9000/1000, fixed sequence:
# - the paper MLP at α = 0.01, where label_01 can certify nothing (dense error 2.1% > α): label_01,
#   disagreement (bounds the drop from above) and the accuracy drop (exact test; WSR);
# - the MNIST CNN: label_01 ≤ 0.03 and disagreement ≤ 0.02 together, the drop ≤ 0.01 alone, and
#   per-class label_01 ≤ 0.05 (ten risks, one per class).
# The network runs once per model (the other tables come from the same pass, cached).
# Writes experiments/results/risks_table.csv and prints it.
# Usage: bash experiments/risks_table.sh [BASE_DIR]  (a finished BASE_DIR is reused as is)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
base=${1:-outputs/risks_table/$(date +%Y-%m-%d_%H-%M-%S)}
common=(calibration.delta=0.05 logger=none figures=false sweep.progress=false)
dirs=()
run() {  # run NAME OVERRIDES...: one single run into $base/NAME
  local name=$1
  shift
  "$PY" -m confprune.run "$@" "${common[@]}" "hydra.run.dir=$base/$name"
  dirs+=("$base/$name")
}
run mlp-label_01 experiment=mnist_paper_mlp loss=label_01 calibration.alpha=0.01
run mlp-disagreement experiment=mnist_paper_mlp loss=disagreement calibration.alpha=0.01
run mlp-drop-exact experiment=mnist_paper_mlp 'calibration.risks=[{loss: accuracy_drop, alpha: 0.01}]'
run mlp-drop-wsr experiment=mnist_paper_mlp 'calibration.risks=[{loss: accuracy_drop, alpha: 0.01, bound: wsr}]'
run cnn-label_01+disagreement experiment=mnist 'calibration.risks=[{loss: label_01, alpha: 0.03}, {loss: disagreement, alpha: 0.02}]'
run cnn-label_01 experiment=mnist loss=label_01 calibration.alpha=0.03
run cnn-drop-exact experiment=mnist 'calibration.risks=[{loss: accuracy_drop, alpha: 0.01}]'
run cnn-per-class experiment=mnist 'calibration.risks=[{loss: label_01, alpha: 0.05, per_class: true}]'
"$PY" - "${dirs[@]}" <<'PYEOF'
import csv, sys
from pathlib import Path
from confprune.record import read_summary

rows = []
for d in map(Path, sys.argv[1:]):
    s = read_summary(d)
    rows.append({"run": d.name, "model": s.model, "risks": s.loss, "dense_accuracy": s.dense.get("accuracy"),
                 "lambda_hat_deploy": s.lambda_hat.deploy, "sparsity_deploy": s.sparsity_hat.deploy_model,
                 "sparsity_median": s.sparsity_hat.median, "certified_fraction": s.certified_fraction,
                 "iid_coverage": s.iid_coverage})
out = Path("experiments/results/risks_table.csv")
out.parent.mkdir(parents=True, exist_ok=True)
with open(out, "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
print("| run | risks | λ̂ (deployed) | sparsity: deployed / median over splits | certified splits | i.i.d. coverage |")
print("|---|---|---|---|---|---|")
for r in rows:
    fmt = lambda v: "—" if v is None or v != v else f"{v:.2f}"  # noqa: E731
    print(f"| {r['run']} | {r['risks']} | {fmt(r['lambda_hat_deploy'])} | {fmt(r['sparsity_deploy'])} / "
          f"{fmt(r['sparsity_median'])} | {r['certified_fraction']:.3f} | {r['iid_coverage']:.3f} |")
print(f"→ {out}")
PYEOF
