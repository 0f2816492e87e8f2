"""The library API: certify a model we did not train with confprune, then verify the export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import confprune


@pytest.fixture(scope="module")
def toy():
    """A small MLP trained in a few steps on two Gaussian blobs, plus held-out calibration data."""
    g = torch.Generator().manual_seed(0)

    def blobs(n):
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randn(n, 8, generator=g) + 2.5 * y[:, None].float()
        return x, y

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = blobs(2000)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), blobs(1500)


GRID = [round(0.05 * i, 2) for i in range(20)]


def test_certify_tensors_and_dataloader_agree(toy):
    model, (x, y) = toy
    a = confprune.certify(model, (x, y), alpha=0.1, delta=0.1, lambdas=GRID)
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=False)
    b = confprune.certify(model, loader, alpha=0.1, delta=0.1, lambdas=GRID)
    assert a.certified and a.lambda_hat == b.lambda_hat and a.sparsity == b.sparsity
    np.testing.assert_array_equal(a.p_values, b.p_values)
    assert a.calibration.bound == "binomial"  # auto: the 0-1 loss is binary
    assert "lambda_hat=" in repr(a) and "sparsity=" in repr(a)
    # The pruned model really is pruned and its calibration risk is the certified one.
    pruned = a.pruned_model
    with torch.no_grad():
        risk = (pruned(x).argmax(1) != y).double().mean().item()
    assert risk == pytest.approx(a.cal_risk, abs=1e-12)
    assert a.cal_risk <= 0.1 and 0 < a.sparsity < 1


def test_unlabeled_data_with_disagreement(toy):
    model, (x, _) = toy
    res = confprune.certify(model, x, loss="disagreement", alpha=0.05, delta=0.1, lambdas=GRID)
    assert res.certified and res.certificate["loss"]["labeled"] is False
    with pytest.raises(ValueError, match="needs targets"):
        confprune.certify(model, x, loss="label_01", lambdas=GRID)


def test_custom_callable_loss(toy):
    model, (x, y) = toy

    def prob_drop(dense, pruned, target):  # drop in the dense-predicted class probability
        k = dense.argmax(1, keepdim=True)
        return (dense.softmax(1).gather(1, k) - pruned.softmax(1).gather(1, k)).clamp(0, 1).squeeze(1)

    res = confprune.certify(model, (x, y), loss=prob_drop, alpha=0.05, delta=0.1, lambdas=GRID)
    assert res.calibration.bound == "hb"  # auto: fractional losses get HB
    assert res.loss.name == "custom:prob_drop"


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda d, p, t: torch.full((d.shape[0],), 1.5), r"outside \[0, 1\]"),
        (lambda d, p, t: torch.zeros(d.shape[0], 2), "one value per sample"),
        (lambda d, p, t: torch.full((d.shape[0],), float("nan")), "NaN"),
    ],
)
def test_bad_custom_losses_are_refused(toy, bad, match):
    model, (x, y) = toy
    with pytest.raises(ValueError, match=match):
        confprune.certify(model, (x, y), loss=bad, lambdas=GRID)


def test_bad_arguments(toy):
    model, (x, y) = toy
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        confprune.certify(model, loader, lambdas=GRID)
    with pytest.raises(ValueError, match="alpha=1.2"):
        confprune.certify(model, (x, y), alpha=1.2)
    with pytest.raises(ValueError, match="fwer='holms'"):
        confprune.certify(model, (x, y), fwer="holms")
    with pytest.raises(ValueError, match="strictly increasing"):
        confprune.certify(model, (x, y), lambdas=[0.0, 0.5, 0.2])
    with pytest.raises(ValueError, match="binary"):
        confprune.certify(model, (x, y), loss="tv_distance", bound="binomial")


def test_save_and_verify_round_trip(toy, tmp_path):
    model, (x, y) = toy
    res = confprune.certify(model, (x, y), alpha=0.1, delta=0.1, lambdas=GRID)
    paths = res.save(tmp_path)
    cert = json.loads((tmp_path / "certificate.json").read_text())
    assert cert["certified"] and cert["lambda_hat"] == res.lambda_hat and len(cert["calibration_indices"]) == 1500
    report = confprune.verify_certificate(paths["certificate"], paths["pruned_model"], model, (x, y))
    assert report.ok and report.status == "VERIFIED WITH AN ISSUER-CHOSEN CALIBRATION SET", str(report)
    assert report.recomputed_cal_risk == cert["cal_risk"]
    state = torch.load(paths["pruned_model"], weights_only=True)
    state["2.bias"] = state["2.bias"] + 1.0  # tampered weights (tests/test_verify.py has the full matrix)
    bad = confprune.verify_certificate(cert, state, model, (x, y))
    assert not bad.ok and {"model.pruned_checksum", "pruned model"} <= {c.name for c in bad.failed}


def test_nothing_certified_is_explicit(toy, tmp_path):
    model, (x, y) = toy
    res = confprune.certify(model, (x, y), alpha=1e-4, delta=0.1, lambdas=GRID)
    assert not res.certified and res.pruned_model is None and res.lambda_hat is None
    assert "NOTHING CERTIFIED" in repr(res)
    paths = res.save(tmp_path)
    assert "pruned_model" not in paths and json.loads((tmp_path / "certificate.json").read_text())["certified"] is False


def test_runs_on_the_models_device(toy):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    model, (x, y) = toy
    res = confprune.certify(model.cuda(), (x, y), alpha=0.1, delta=0.1, lambdas=GRID)
    cpu = confprune.certify(model.cpu(), (x, y), alpha=0.1, delta=0.1, lambdas=GRID)
    assert res.certified and abs(res.cal_risk - cpu.cal_risk) <= 2 / len(x)
