"""One spine for several families: Pareto testing ends in the same kind of certificate as one
family, and verify re-derives it — every family rebuilt, every configuration's calibration losses
and cost recomputed, Pareto testing re-run with the recorded split seed. A tampered Pareto
certificate fails, naming the field."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import confprune
from confprune.calibrate import deployment_indices
from confprune.commitment import committed_draw, table_commitment
from confprune.integrity import fingerprint
from confprune.models import MnistCNN
from confprune.multiknob import certify_pareto_from_tables, knob_tables
from confprune.pruning import FamilySpec
from confprune.stats.risks import RiskSpec
from confprune.verify import FAILED, ISSUER, PLAIN

REPO = Path(__file__).resolve().parents[1]
GRID = [round(0.1 * i, 1) for i in range(9)]
KNOBS = [FamilySpec("magnitude"), FamilySpec("l1", "channel"), FamilySpec("l1", "channel", quantize=True)]


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = MnistCNN(channels=(8, 16), hidden=32).eval()
    x = torch.randn(1500, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    flip = torch.rand(1500, generator=torch.Generator().manual_seed(1)) < 0.02
    y[flip] = (y[flip] + 1) % 10
    return model, x, y


@pytest.fixture(scope="module")
def seeded(cnn):
    """What the runner issues: Pareto testing on a deployment draw from the pool, its seed (and
    the optimisation/testing split's) derived from a commitment."""
    model, x, y = cnn
    risks = [RiskSpec("label_01", 0.08), RiskSpec("accuracy_drop", 0.05)]
    pt = knob_tables(model, (x, y), knobs=KNOBS, risks=risks, lambdas=GRID, objective="macs")
    first = pt.tables[0][risks[0].table]  # the pool's fingerprint and size, the grid
    draw = committed_draw(table_commitment(model, [s.config for s in KNOBS], first, risks, delta=0.1, n_cal=1000))
    idx = deployment_indices(len(x), 1000, draw["seed"])
    res = certify_pareto_from_tables(
        model, pt, idx, delta=0.1, seed=draw["seed"], calibration_draw=draw,
        data_info={"calibration_fingerprint": fingerprint(x, y, idx), "dataset": {"name": "mnist"}})
    return res, pt


def test_an_honest_pareto_certificate_verifies(cnn, seeded):
    model, x, y = cnn
    res, _ = seeded
    assert res.certified and res.certificate["fwer"] == "pareto_testing"
    report = confprune.verify_certificate(res.certificate, res.pruned_state, model, (x, y), data_from_registry=True)
    assert report.ok and report.status == PLAIN, str(report)
    names = {c.name for c in report.checks}
    assert {"pareto.front", "pareto.test_pvalues", "pareto.costs", "pareto.certified_config",
            "pruned model"} <= names
    assert any(n.startswith("holdout test") for n in names)


def test_the_deployed_family_is_the_certified_configurations(seeded):
    res, pt = seeded
    rec = res.certificate["pareto"]
    k, g = divmod(rec["certified_config"], len(GRID))
    assert res.family is pt.families[k] and res.lambda_hat == GRID[g]
    assert res.configuration["label"] == KNOBS[k].label
    assert rec["certified_cost"] == pt.costs[rec["certified_config"]]
    assert res.front() and res.front()[0]["certified"]


@pytest.mark.parametrize("field,edit", [
    ("pareto.certified_config", lambda c: c["pareto"].__setitem__("certified_config", c["pareto"]["order"][-1])),
    ("pareto.costs", lambda c: c["pareto"]["costs"].__setitem__(0, c["pareto"]["costs"][0] * 0.5)),
    ("pareto.test_pvalues", lambda c: c["pareto"]["test_pvalues"].__setitem__(0, 1e-9)),
    ("pareto.split_seed", lambda c: c["pareto"].__setitem__("split_seed", c["pareto"]["split_seed"] + 1)),
    ("pareto.families", lambda c: c["pareto"]["families"][c["pareto"]["certified_family"]].__setitem__("criterion", "l2")),
    ("pareto.alphas", lambda c: c["risks"][0].__setitem__("alpha", 0.5)),
])
def test_a_tampered_pareto_certificate_fails(cnn, seeded, field, edit):
    model, x, y = cnn
    res, _ = seeded
    cert = copy.deepcopy(res.certificate)
    edit(cert)
    report = confprune.verify_certificate(cert, res.pruned_state, model, (x, y), data_from_registry=True)
    assert not report.ok and report.status == FAILED, (field, str(report))


def test_a_pareto_export_of_another_configuration_fails(cnn, seeded):
    model, x, y = cnn
    res, pt = seeded
    other = pt.families[0].export_state(model, 0.8)  # another family's model at another λ
    report = confprune.verify_certificate(res.certificate, other, model, (x, y), data_from_registry=True)
    assert not report.ok and "model.pruned_checksum" in {c.name for c in report.failed}


def test_a_library_pareto_certificate_is_issuer_chosen(cnn):
    model, x, y = cnn
    res = confprune.multiknob.certify_pareto(model, (x[:800], y[:800]), knobs=KNOBS[:2],
                                             risks=[RiskSpec("label_01", 0.1)], lambdas=GRID, delta=0.1, seed=2)
    assert res.certificate["calibration"]["order"] == "seeded_order"
    report = confprune.verify_certificate(res.certificate, res.pruned_state, model, (x[:800], y[:800]))
    assert report.ok and report.status == ISSUER, str(report)


def test_the_runner_pareto_run_verifies_and_a_tampered_one_fails(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "confprune.run", "experiment=pareto_mnist", "debug=default",
                           f"hydra.run.dir={out}"], capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cert_path = out / "certificate.json"
    verify = [sys.executable, "-m", "confprune.verify", str(cert_path)]
    if (out / "pruned_model.pt").exists():
        verify.append(str(out / "pruned_model.pt"))
    ok = subprocess.run(verify, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
    cert = json.loads(cert_path.read_text())
    cert["pareto"]["costs"] = [c * (1 + 0.1 * (i % 3)) for i, c in enumerate(cert["pareto"]["costs"])]
    cert_path.write_text(json.dumps(cert))
    bad = subprocess.run(verify, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert bad.returncode == 1 and "FAIL  pareto.costs" in bad.stdout, bad.stdout[-3000:]
