"""Issue 26: three ways a correct procedure, wired to the wrong data, issued a false certificate.

1. The accuracy drop was measured against the loss table's first row, which is the dense model
   only when the grid starts at λ = 0: a grid [0.95, 0.97] certified "drop ≤ 0.01" at an error
   many times the dense model's.
2. ``certify(..., bound="wsr")`` bet in the data's own order: data sorted by how the pruned model
   does certified a false claim.
3. For an int8 knob the drop's reference was the int8 model (the knob's λ = 0 member).

Each case is built here — with the honest code (which must refuse it) and, where it can still be
assembled by hand, as the false certificate (which ``verify`` must reject).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import confprune
from confprune.api import certify_from_table
from confprune.losses import make_loss
from confprune.multiknob import certify_pareto, knob_tables
from confprune.pruning import FamilySpec, build_family
from confprune.stats.risks import RiskSpec
from confprune.sweep import compute_loss_tables
from confprune.verify import FAILED, ISSUER


def failed(report) -> set[str]:
    return {c.name for c in report.failed}


# ------------------------------------------------------------------ 1. the drop's reference


def test_a_drop_on_a_grid_without_zero_is_measured_against_the_dense_model(pool):
    model, x, y = pool
    grid = [0.9, 0.95]
    family = build_family(model)
    (table,) = compute_loss_tables(model, family, grid, (x, y), [make_loss("label_01")], progress=False)
    dense_err = float(table.dense_losses.mean())
    assert table.losses[0].mean() > dense_err + 0.05  # λ = 0.9 is far worse than the dense model
    spec = [RiskSpec("accuracy_drop", 0.01)]
    honest = certify_from_table(model, family, table, make_loss("label_01"), alpha=0.01, delta=0.1, risks=spec,
                                tables={"label_01": table})
    assert not honest.certified
    assert confprune.verify_certificate(honest.certificate, None, model, (x, y)).ok
    # The old wiring, reproduced by hand: the first grid row passed off as the dense model.
    slipped = copy.copy(table)
    slipped.dense_losses = table.losses[0].copy()
    forged = certify_from_table(model, family, slipped, make_loss("label_01"), alpha=0.01, delta=0.1, risks=spec,
                                tables={"label_01": slipped})
    assert forged.certified  # what the old code certified (here even λ = 0.95)
    report = confprune.verify_certificate(forged.certificate, forged.pruned_state, model, (x, y))
    assert report.status == FAILED
    assert {"p_values", "risks[accuracy_drop<=0.01].p_values", "lambda_index"} <= failed(report)


def test_certify_with_a_drop_risk_on_a_late_grid_refuses_through_the_public_api(pool):
    model, x, y = pool
    res = confprune.certify(model, (x, y), risks=[RiskSpec("accuracy_drop", 0.01)], lambdas=[0.9, 0.95], delta=0.1,
                            measure_cost=False)
    assert not res.certified


def test_the_runner_measures_the_drop_against_the_dense_model(compose, tmp_path):
    """The issue's reproduction, on the smoke experiment: a grid [0.95, 0.97] and a drop ≤ 0.01."""
    from confprune.pipeline import run
    from confprune.verify import main as verify_main

    _, cfg = compose(["experiment=mnist_smoke", "figures=false", "calibration.lambdas=[0.95,0.97]",
                      "calibration.risks=[{loss: accuracy_drop, alpha: 0.01}]", "calibration.n_splits=50"], tmp_path)
    s = run(cfg, tmp_path).summary
    assert s.pool_risk[0] > 1 - s.dense["accuracy"] + 0.05  # λ = 0.95 errs far more than the dense model
    assert abs(s.dense_risk - (1 - s.dense["accuracy"])) < 1e-9  # the dense risk is the dense model's
    assert not s.deploy.certified
    assert s.certified_fraction == 0.0 and s.iid_coverage == 1.0  # nothing certified, nothing violated
    assert verify_main([str(tmp_path / "certificate.json")]) == 0  # the honest "nothing certified" verifies


# ------------------------------------------------------------------ 2. the betting order


def test_wsr_bets_in_a_seeded_order_not_the_datas_own(pool):
    model, x, y = pool
    family = build_family(model)
    lam = 0.7
    (table,) = compute_loss_tables(model, family, [lam], (x, y), [make_loss("label_01")], progress=False)
    wrong = table.losses[0]
    assert wrong.mean() > 0.08  # the true risk at λ is well above α = 0.03
    order = np.argsort(wrong, kind="stable")  # the points the pruned model gets right first
    xs, ys = x[order], y[order]
    grid = [0.0, lam]
    res = confprune.certify(model, (xs, ys), loss="label_01", bound="wsr", alpha=0.03, delta=0.1, lambdas=grid,
                            measure_cost=False)
    assert res.lambda_hat != lam  # betting in the data's order certified λ (p ≈ 1e-30)
    draw = res.certificate["calibration"]
    assert draw == {"source": "issuer", "order": "seeded_order", "order_seed": 0}
    assert sorted(res.certificate["calibration_indices"]) == list(range(len(xs)))
    report = confprune.verify_certificate(res.certificate, res.pruned_state, model, (xs, ys))
    assert report.status == ISSUER and "calibration order" not in failed(report)
    # A certificate that bets in the data's own order (no seeded permutation) is not verified.
    forged = copy.deepcopy(res.certificate)
    forged["calibration"] = {"source": "issuer"}
    forged["calibration_indices"] = list(range(len(xs)))
    assert "calibration order" in failed(confprune.verify_certificate(forged, res.pruned_state, model, (xs, ys)))
    # Nor one whose recorded order is not the seeded permutation it claims.
    swapped = copy.deepcopy(res.certificate)
    idx = swapped["calibration_indices"]
    idx[0], idx[1] = idx[1], idx[0]
    assert "calibration order" in failed(confprune.verify_certificate(swapped, res.pruned_state, model, (xs, ys)))


# ------------------------------------------------------------------ 3. the int8 knob's reference


@pytest.fixture(scope="module")
def int8_trap():
    """A model whose float predictions are the labels but whose int8 version errs on 90% of points:
    two output rows that differ by 0.1% round to the same int8 weights (ties go to class 0)."""
    model = nn.Sequential(nn.Linear(2, 2)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [1.001, 0.0]]))
        model[0].bias.zero_()
    t = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 2 + 0.1
    t[:100] *= -1
    x = torch.stack([t, torch.zeros_like(t)], 1)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_an_int8_knob_is_measured_against_the_float_dense_model(int8_trap):
    model, x, y = int8_trap
    risks = [RiskSpec("accuracy_drop", 0.01)]
    kt = knob_tables(model, (x, y), knobs=[FamilySpec(quantize=True)], risks=risks, lambdas=[0.0, 0.2])
    drop_int8 = 2 * kt.losses[0, 0].mean() - 1  # mean form x = (d + 1)/2 at λ = 0
    assert drop_int8 == pytest.approx(0.9, abs=1e-9)  # the int8 model's drop against the float model
    res = certify_pareto(model, (x, y), knobs=[FamilySpec(quantize=True)], risks=risks, lambdas=[0.0, 0.2], delta=0.1)
    assert not res.certified  # the old wiring certified "drop ≤ 0.01" here (true drop +0.9)


def test_pareto_records_the_bound_it_used_and_refuses_one_it_cannot(int8_trap, tmp_path):
    import json

    model, x, y = int8_trap
    res = certify_pareto(model, (x, y), knobs=[FamilySpec()], risks=[RiskSpec("accuracy_drop", 0.01)], lambdas=[0.0, 0.2],
                         delta=0.1)
    res.save(tmp_path)
    rec = json.loads((tmp_path / "certificate.json").read_text())["risks"][0]
    assert rec["bound"] == "wsr" and rec["requested_bound"] == "auto"
    with pytest.raises(ValueError, match="bound='exact' is not available"):
        knob_tables(model, (x, y), knobs=[FamilySpec()], risks=[RiskSpec("accuracy_drop", 0.01, bound="exact")],
                    lambdas=[0.0, 0.2])


# ------------------------------------------------------------------ refused at the door


@pytest.mark.parametrize("overrides,key", [
    (["calibration.risks=[{loss: accuracy_drop, alpha: 0.0}]"], "calibration.risks[0].alpha"),
    (["calibration.risks=[{loss: accuracy_drop, alpha: 0.01, gamma: 1.5}]"], "calibration.risks[0].gamma"),
    (["experiment=pareto_mnist", "calibration.risks=[{loss: accuracy_drop, alpha: 0.01, bound: exact}]"],
     "calibration.risks[0].bound"),
])
def test_drop_settings_that_cannot_certify_are_refused_before_any_work(compose, overrides, key):
    from confprune.errors import ConfigError
    from confprune.schema import check_config

    _, cfg = compose(["experiment=mnist_smoke", *overrides])
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        check_config(cfg)
