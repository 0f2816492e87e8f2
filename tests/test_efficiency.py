"""Certified efficiency: channel pruning through certify and the runner, compact exports, the cost
a certificate states (re-derived by verify)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import confprune
from confprune.compact import load_pruned_module, load_sparse_state
from confprune.cost import model_cost
from confprune.models import MnistCNN
from confprune.record import read_summary

REPO = Path(__file__).resolve().parents[1]
GRID = [round(0.1 * i, 1) for i in range(9)]


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = MnistCNN(channels=(8, 16), hidden=32).eval()
    x = torch.randn(800, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_channel_certificate_is_physically_smaller_and_verifies(cnn, tmp_path):
    model, x, y = cnn
    res = confprune.certify(model, (x, y), loss="disagreement", alpha=0.2, delta=0.1, lambdas=GRID,
                            structure="channel", criterion="l1")
    assert res.certified and res.lambda_hat > 0
    small = res.pruned_model
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    cost = res.cost
    assert cost["deploy"]["macs"] < cost["dense"]["macs"] and cost["deploy"]["bytes"] < cost["dense"]["bytes"]
    assert cost["deploy"]["latency"]["batch_1"]["threads"] == 1
    paths = res.save(tmp_path)
    rebuilt = load_pruned_module(paths["pruned_model"], MnistCNN(channels=(8, 16), hidden=32))
    with torch.no_grad():
        assert torch.equal(rebuilt(x[:50]), small(x[:50]))  # the file rebuilds the certified model exactly
    report = confprune.verify_certificate(paths["certificate"], paths["pruned_model"], model, (x, y))
    assert report.ok, str(report)
    assert {"pruned model", "cost.deploy", "cost.latency"} <= {c.name for c in report.checks}


def test_forged_cost_fails(cnn):
    model, x, y = cnn
    res = confprune.certify(model, (x, y), loss="disagreement", alpha=0.2, delta=0.1, lambdas=GRID,
                            structure="channel")
    cert = copy.deepcopy(res.certificate)
    cert["cost"]["deploy"]["macs"] //= 2  # claim a cheaper model than the one certified
    report = confprune.verify_certificate(cert, res.pruned_state, model, (x, y))
    assert "cost.deploy" in {c.name for c in report.failed}


def test_unstructured_export_has_a_compact_copy(cnn, tmp_path):
    model, x, y = cnn
    res = confprune.certify(model, (x, y), loss="disagreement", alpha=0.3, delta=0.1, lambdas=GRID)
    assert res.certified
    paths = res.save(tmp_path)
    sparse = load_sparse_state(paths["pruned_model_sparse"])
    dense_file = torch.load(paths["pruned_model"], weights_only=True)
    assert set(sparse) == set(dense_file) and all(torch.equal(sparse[k], dense_file[k]) for k in sparse)
    assert Path(paths["pruned_model_sparse"]).stat().st_size == res.cost["deploy"]["bytes"]  # the stated bytes are the file


def test_compact_unstructured_export_meets_the_size_target():
    # The MNIST CNN at the sparsity certified in the README (0.89 of the pool): the compact file
    # must be at most 0.35 × the dense state_dict file.
    from confprune.models import build_model
    from confprune.pruning import build_family

    torch.manual_seed(0)
    model = build_model({"name": "mnist_cnn"}).eval()
    family = build_family(model)
    x = torch.zeros(1, 1, 28, 28)
    ratio = model_cost(model, family, 0.89, x)["bytes"] / model_cost(model, family, None, x)["bytes"]
    assert ratio <= 0.35, ratio


@pytest.mark.slow
def test_channel_pruning_through_the_runner(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "confprune.run", "experiment=mnist_smoke", "pruning=channel",
                           f"hydra.run.dir={out}"], capture_output=True, text=True, cwd=REPO, env=dict(os.environ),
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = read_summary(out)
    assert s.structure == "channel" and s.criterion == "l1"
    curve = s.cost["curve"]
    assert len(curve["macs"]) == len(s.lambdas) and curve["macs"][0] == s.cost["dense"]["macs"]
    assert np.all(np.diff(curve["macs"]) <= 0)  # nested: more pruning never costs more
    assert (out / "figures" / "risk_vs_cost.png").exists()
    ver = subprocess.run([sys.executable, "-m", "confprune.verify", str(out / "certificate.json"),
                          str(out / "pruned_model.pt")], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert ver.returncode == 0, ver.stdout[-3000:]
