"""M&U variants on the MNIST CNN (issue 15): certified sparsity of each variant side by side.

M&U ranks below layer-wise magnitude on the MNIST CNN; one suspect is that weights whose σ̂ is 0
(they never move in the tracked window) score |w|/ε and are kept to the end. The variants (options
of ``mu_scores`` or of the trainer; all **ours**):

  (a) mu             the plain score |w| / (σ̂ + 1e-8) (pruning=mu pruning.inert_rel=null)
  (b) mu_relative    ε of a tensor = eps_rel × its median σ̂ (eps_rel = 1; also 0.1)
  (c) mu_inert       σ̂ = 0 weights ("inert") score 0: pruned first (pruning=mu, the default
                     since this study)
  (d) mu_decay       trained with weight decay 1e-4 (a separately cached model); magnitude on the
                     same model as its control
  (e) updates        σ̂ of the per-step updates Δw instead of the weights (needs update tracking)

with global and layer-wise magnitude as references. Each variant runs once per loss through
``python -m confprune.run`` (experiment=mnist, the same seed, splits and grid; the network runs once
per variant, the second loss comes from the cache); every α ∈ {0.01, 0.03, 0.05} is computed from
the run's loss table with ``validate_splits`` on the run's own splits (equal to its splits.csv at the
run's α, checked) and ``iid_validation``.

(e) trains with ``trainer.trajectory.track_updates=true`` (pruning=mu_updates; a separately cached
checkpoint). Update tracking does not change training, so its weights must equal (a)'s: checked.

    python experiments/mu_variants.py [--base DIR] [--out experiments/results]

Writes ``mu_variants.csv`` and ``mu_variants.md`` and prints them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ALPHAS = (0.01, 0.03, 0.05)
LOSSES = ("label_01", "disagreement")
COMMON = ["experiment=mnist", "calibration.alpha=0.03", "calibration.delta=0.05", "logger=none", "figures=false",
          "sweep.progress=false", "cost.latency=false"]

# name → (label, runner overrides, needs update tracking)
VARIANTS: dict[str, tuple[str, list[str], bool]] = {
    "magnitude": ("global magnitude (reference)", ["pruning=magnitude"], False),
    "layerwise": ("layer-wise magnitude (reference)", ["pruning=layerwise"], False),
    "mu": ("(a) M&U, plain reading (ε = 1e-8)", ["pruning=mu", "pruning.inert_rel=null"], False),
    "mu_relative": ("(b) ε = 1 × median σ̂ of the tensor", ["pruning=mu_relative"], False),
    "mu_relative_0.1": ("(b) ε = 0.1 × median σ̂ of the tensor", ["pruning=mu_relative", "pruning.eps_rel=0.1"], False),
    "mu_inert": ("(c) σ̂ = 0 weights pruned first (the default)", ["pruning=mu"], False),
    "mu_decay": ("(d) M&U, trained with weight decay 1e-4", ["pruning=mu_decay"], False),
    "magnitude_decay": ("(d) control: global magnitude, same model",
                        ["pruning=magnitude", "trainer.weight_decay=1e-4", "trainer.trajectory.enabled=true"], False),
    "mu_updates": ("(e) σ̂ of the per-step updates Δw", ["pruning=mu_updates"], True),
}


def run_variant(base: Path, name: str, loss: str) -> Path:
    """One runner call (a finished directory of the same config is reused by the runner)."""
    _, overrides, _ = VARIANTS[name]
    out = base / f"{name}-{loss}"
    argv = [*COMMON, *overrides, f"loss={loss}", f"hydra.run.dir={out}"]
    cmd = [sys.executable, "-m", "confprune.run", *argv]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    return out


def inert_fraction(run_dir: Path) -> float:
    """Fraction of the pool whose σ̂ over the tracked window is exactly 0 (NaN without a trajectory)."""
    import torch

    from confprune.pruning.trajectory import trajectory_std

    cert = json.loads((run_dir / "certificate.json").read_text())
    ckpt = torch.load(cert["model"]["checkpoint"], map_location="cpu", weights_only=True)
    traj = ckpt.get("trajectory") or {}
    if not traj:
        return math.nan
    names = [k[len("m2/"):] for k in traj if k.startswith("m2/")]
    zero = sum(int((trajectory_std(traj, n) == 0).sum()) for n in names)
    return zero / sum(traj["m2/" + n].numel() for n in names)


def rows_for(name: str, run_dir: Path) -> list[dict[str, Any]]:
    from confprune.record import read_splits, read_summary
    from confprune.stats import (
        draw_iid_calibration,
        draw_splits,
        iid_validation,
        make_fwer,
        validate_splits,
    )
    from confprune.sweep import LossTable

    s = read_summary(run_dir)
    table = LossTable.load(run_dir / "losses.npz")
    n_pool = table.losses.shape[1]
    splits = draw_splits(n_pool, s.n_cal, s.n_test, s.n_splits, s.seed)
    iid = draw_iid_calibration(n_pool, s.n_cal, s.n_splits, s.seed)
    fwer = make_fwer(s.fwer)
    recorded = read_splits(run_dir)
    rows = []
    for alpha in ALPHAS:
        v = validate_splits(table.losses, splits, alpha=alpha, delta=s.delta, bound=s.bound, fwer=fwer)
        sp = np.where(v.certified, table.sparsity[np.maximum(v.lambda_index, 0)], np.nan)
        if math.isclose(alpha, s.alpha) and not np.allclose(recorded["sparsity_hat"], sp, equal_nan=True, atol=1e-12):
            raise RuntimeError(f"{run_dir}: recomputed splits differ from the run's splits.csv")
        iv = iid_validation(table.losses, n_cal=s.n_cal, n_reps=s.n_splits, alpha=alpha, delta=s.delta,
                            bound=s.bound, fwer=fwer, draws=iid)
        # over ALL splits, a split that certified nothing counting as 0 (the one definition)
        q = np.quantile(np.where(v.certified, sp, 0.0), [0.05, 0.5, 0.95])
        rows.append({
            "variant": name, "label": VARIANTS[name][0], "loss": s.loss, "alpha": alpha,
            "sparsity_median": float(q[1]),
            "sparsity_q05": float(q[0]), "sparsity_q95": float(q[2]),
            "certified_fraction": float(v.certified.mean()), "iid_coverage": iv.coverage,
            "dense_accuracy": s.dense.get("accuracy", math.nan), "dense_risk": s.dense_risk,
            "criterion": s.criterion, "run_dir": str(run_dir),
        })
    return rows


def fmt(r: dict[str, Any]) -> str:
    return f"{r['sparsity_median']:.2f} [{r['sparsity_q05']:.2f}–{r['sparsity_q95']:.2f}] ({r['iid_coverage']:.2f})"


def markdown(rows: list[dict[str, Any]], inert: dict[str, float]) -> str:
    cols = [(loss, a) for loss in LOSSES for a in ALPHAS]
    head = "| variant | dense acc. | inert (σ̂ = 0) | " + " | ".join(
        f"{'label_01' if loss == 'label_01' else 'disagr.'} α={a:g}" for loss, a in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 3)]
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = {(r["loss"], r["alpha"]): r for r in rows if r["variant"] == name}
        first = next(iter(mine.values()))
        frac = inert.get(name, math.nan)
        lines.append(f"| {first['label']} | {first['dense_accuracy']:.4f} | "
                     f"{'—' if not np.isfinite(frac) else f'{100 * frac:.1f}%'} | "
                     + " | ".join(fmt(mine[c]) if c in mine else "n/a" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=Path("outputs/mu_variants"))
    parser.add_argument("--out", type=Path, default=Path("experiments/results"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    inert: dict[str, float] = {}
    weights: dict[str, str] = {}
    for name in args.variants:
        for loss in LOSSES:
            run_dir = run_variant(args.base, name, loss)
            rows += rows_for(name, run_dir)
        inert[name] = inert_fraction(run_dir)
        weights[name] = json.loads((run_dir / "certificate.json").read_text())["model"]["dense_checksum"]
    if {"mu", "mu_updates"} <= set(weights) and weights["mu"] != weights["mu_updates"]:
        raise RuntimeError("update tracking changed the trained weights: (e) is not comparable with (a)")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "mu_variants.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    table = markdown(rows, inert)
    (args.out / "mu_variants.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
