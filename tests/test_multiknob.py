"""Multi-knob certification (Pareto testing over declared pruning families) and the planner, as a
user runs them: the library API, the runner's experiment, the planner's CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from confprune.models import MnistCNN
from confprune.multiknob import certify_pareto, iid_validate_pareto, knob_tables
from confprune.pruning import FamilySpec
from confprune.stats.risks import RiskSpec

REPO = Path(__file__).resolve().parents[1]
GRID = [round(0.1 * i, 1) for i in range(9)]


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = MnistCNN(channels=(8, 16), hidden=32).eval()
    x = torch.randn(2000, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    flip = torch.rand(2000, generator=torch.Generator().manual_seed(1)) < 0.02
    y[flip] = (y[flip] + 1) % 10
    return model, x, y


KNOBS = [FamilySpec("magnitude", "unstructured"), FamilySpec("l1", "channel"), FamilySpec("l1", "channel", quantize=True)]


def test_certify_pareto_returns_a_cheapest_passing_configuration(cnn):
    model, x, y = cnn
    risks = [RiskSpec("label_01", 0.08)]
    res = certify_pareto(model, (x, y), knobs=KNOBS, risks=risks, delta=0.1, lambdas=GRID, objective="macs")
    assert res.certified, res
    conf = res.configuration
    rows = res.front()
    certified = [r for r in rows if r["certified"]]
    assert certified and conf["cost"] == min(r["cost"] for r in certified)  # the cheapest that passed
    assert all(r["p_test"] <= 0.1 for r in certified)  # the rejected prefix
    assert res.pruned_model is not None
    with torch.no_grad():  # the certified model's risk on these points is about the estimate
        err = float((res.pruned_model(x).argmax(1) != y).float().mean())
    assert err <= 0.08 + 0.02


def test_the_whole_procedure_holds_on_real_tables(cnn):
    # i.i.d. draws from this pool: its risks are the truth; violations ≤ δ within 3 MC s.e.
    model, x, y = cnn
    kt = knob_tables(model, (x, y), knobs=KNOBS[:2], risks=[RiskSpec("label_01", 0.08), RiskSpec("accuracy_drop", 0.04)],
                     lambdas=GRID)
    out = iid_validate_pareto(kt, n_cal=600, reps=200, delta=0.1)
    assert 1 - out["coverage"] <= 0.1 + 3 * np.sqrt(0.1 * 0.9 / 200), out
    assert out["certified_fraction"] > 0.5


def test_bad_objective_is_refused(cnn):
    model, x, y = cnn
    with pytest.raises(ValueError, match="objective='flops'"):
        certify_pareto(model, (x, y), knobs=KNOBS[:1], risks=[RiskSpec("label_01", 0.1)], lambdas=GRID, objective="flops")


@pytest.mark.slow
def test_pareto_experiment_through_the_runner(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "confprune.run", "experiment=pareto_mnist", "dataset.pool_limit=1500",
         "dataset.train_limit=6000", "trainer.epochs=1", "calibration.n_cal=1000", "calibration.n_test=200",
         "calibration.alpha=0.1", "calibration.grid.num=6", "knobs.validation_reps=20", "logger=none",
         "sweep.progress=false", f"hydra.run.dir={out}"],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    cert = json.loads((out / "certificate.json").read_text())
    assert cert["fwer"] == "pareto_testing" and len(cert["pareto"]["families"]) == 4
    assert (out / "pareto_front.csv").exists() and (out / "figures" / "pareto_front.png").exists()
    from confprune.record import read_summary

    summary = read_summary(out)
    assert summary.fwer == "pareto_testing" and len(summary.cost["single_family"]) == 4
    assert summary.cost["certified_cost"] == cert["pareto"]["certified_cost"]


def test_planner_cli(tmp_path):
    from confprune.sweep import LossTable

    g, n = 10, 4000
    u = np.random.default_rng(0).random(n)
    losses = (u[None] < np.linspace(0.01, 0.2, g)[:, None]).astype(np.float32)
    grid = np.round(np.linspace(0, 0.9, g), 10)
    LossTable(grid=grid, losses=losses, sparsity=grid).save(tmp_path / "losses.npz")
    cmd = [sys.executable, "-m", "confprune.plan", str(tmp_path), "--delta", "0.1"]
    ok = subprocess.run([*cmd, "--alpha", "0.1", "--n-cal", "1000", "--target-sparsity", "0.5"], capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0 and "P(certify anything)" in ok.stdout and "n_cal ≥" in ok.stdout, ok.stdout + ok.stderr
    none = subprocess.run([*cmd, "--alpha", "0.005", "--n-cal", "1000"], capture_output=True, text=True, timeout=300)
    assert none.returncode == 0 and "dense" in none.stdout.lower() and "nothing" in none.stdout.lower(), none.stdout
