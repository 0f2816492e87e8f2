"""verify re-derives the certificate: honest certificates from every bound × FWER procedure pass;
every forgery an adversary can make with the library's own functions fails, naming the field."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import confprune
from confprune.api import certify_from_table
from confprune.calibrate import deployment_indices
from confprune.commitment import committed_draw, table_commitment
from confprune.export import claim_text, pruned_state_dict
from confprune.integrity import fingerprint, state_dict_checksum
from confprune.losses import make_loss
from confprune.pruning import build_family
from confprune.stats import BOUNDS, FWERS, pvalues_from_losses
from confprune.stats.risks import RiskSpec
from confprune.sweep import compute_loss_table
from confprune.verify import ISSUER, PLAIN

GRID = [round(0.05 * i, 2) for i in range(20)]


def seeded_certificate(model, x, y, *, fwer="fixed_sequence", bound="binomial", alpha=0.1, n_cal=2000):
    """What the runner issues: a deployment set drawn from the pool by the seed a commitment to
    the model, pool, family, risk and procedure derives (no seed of the issuer's choosing)."""
    family = build_family(model)
    table = compute_loss_table(model, family, GRID, (x, y), make_loss("label_01"), batch_size=500, progress=False)
    draw = committed_draw(table_commitment(model, [family.config], table, [RiskSpec("label_01", alpha, bound)],
                                           delta=0.1, fwer=fwer, n_cal=n_cal))
    idx = deployment_indices(len(x), n_cal, draw["seed"])
    # A drawn set must name a registered dataset, whose pool the CLI loads itself; this small
    # stand-in pool is vouched for by the tests' verifier (data_from_registry=True) where a plain
    # pass is expected.
    res = certify_from_table(model, family, table, make_loss("label_01"), alpha=alpha, delta=0.1, bound=bound,
                             fwer=fwer, calibration_indices=idx, calibration_draw=draw,
                             data_info={"calibration_fingerprint": fingerprint(x, y, idx), "dataset": {"name": "mnist"}})
    return res, table


def failed(report) -> set[str]:
    return {c.name for c in report.failed}


@pytest.mark.parametrize("fwer", list(FWERS))
@pytest.mark.parametrize("bound", BOUNDS)
def test_honest_certificates_verify_for_every_bound_and_procedure(pool, bound, fwer):
    model, x, y = pool
    res, _ = seeded_certificate(model, x, y, fwer=fwer, bound=bound)
    assert res.certified, (bound, fwer)
    # The verifier vouches that (x, y) is the registered pool the certificate names (the CLI loads it).
    report = confprune.verify_certificate(res.certificate, res.pruned_state, model, (x, y), data_from_registry=True)
    assert report.ok and report.status == PLAIN, str(report)
    assert report.recomputed_cal_risk == res.cal_risk


def test_a_caller_cannot_declare_its_own_points_seeded(pool):
    from confprune.errors import OptionError

    model, x, y = pool
    family = build_family(model)
    table = compute_loss_table(model, family, GRID, (x, y), make_loss("label_01"), batch_size=500, progress=False)
    # A seed the caller names is refused outright (it could have been searched): issue 25.
    with pytest.raises(OptionError, match="committed_draw"):
        certify_from_table(model, family, table, make_loss("label_01"), alpha=0.1, delta=0.1,
                           calibration_draw={"source": "seeded", "pool_size": len(x), "n_cal": len(x), "seed": 0})
    # A committed draw over the caller's own points (no registered dataset named) is refused too.
    draw = committed_draw(table_commitment(model, [family.config], table, [RiskSpec("label_01", 0.1, "binomial")],
                                           delta=0.1, n_cal=len(x)))
    with pytest.raises(OptionError, match="registered dataset"):
        certify_from_table(model, family, table, make_loss("label_01"), alpha=0.1, delta=0.1, calibration_draw=draw)


def test_a_seed_of_the_issuers_choosing_cannot_be_certified(pool):
    # Issue 25 (seed shopping): the draw's seed is the digest of a commitment to what precedes
    # calibration. A draw recorded with another seed, or for another claim, is refused at issue
    # time (the wiring check) and fails verify.
    model, x, y = pool
    family = build_family(model)
    table = compute_loss_table(model, family, GRID, (x, y), make_loss("label_01"), batch_size=500, progress=False)
    draw = committed_draw(table_commitment(model, [family.config], table, [RiskSpec("label_01", 0.1, "binomial")],
                                           delta=0.1, n_cal=2000))
    shopped = {**draw, "seed": 41871}
    info = {"dataset": {"name": "mnist"}}
    with pytest.raises(ValueError, match="calibration.digest"):
        certify_from_table(model, family, table, make_loss("label_01"), alpha=0.1, delta=0.1, data_info=info,
                           calibration_indices=deployment_indices(len(x), 2000, 41871), calibration_draw=shopped)
    # The draw committed to α = 0.1 does not serve a claim at α = 0.05.
    with pytest.raises(ValueError, match="calibration.commitment"):
        certify_from_table(model, family, table, make_loss("label_01"), alpha=0.05, delta=0.1, data_info=info,
                           calibration_indices=deployment_indices(len(x), 2000, draw["seed"]), calibration_draw=draw)


def test_verify_fails_a_shopped_seed_with_a_recomputed_digest(pool):
    # The forger edits the seed and the indices, recomputes p-values and everything downstream with
    # the library's functions: the commitment's digest no longer gives that seed.
    model, x, y = pool
    res, table = seeded_certificate(model, x, y)
    cert = copy.deepcopy(res.certificate)
    cert["calibration"]["seed"] = 41871
    idx = deployment_indices(len(x), cert["n_cal"], 41871)
    cert["calibration_indices"] = idx.tolist()
    cert["data"]["calibration_fingerprint"] = fingerprint(x, y, idx)
    report = confprune.verify_certificate(cert, res.pruned_state, model, (x, y), data_from_registry=True)
    assert not report.ok and "calibration.digest" in failed(report), str(report)
    # Editing the commitment to another claim (α) breaks its match with the certificate's fields.
    cert = copy.deepcopy(res.certificate)
    cert["calibration"]["commitment"]["risks"][0]["alpha"] = 0.2
    report = confprune.verify_certificate(cert, res.pruned_state, model, (x, y), data_from_registry=True)
    assert "calibration.commitment" in failed(report), str(report)


def test_a_legacy_seeded_certificate_is_not_a_plain_pass(pool):
    # Certificates from before the commitment name a seed the issuer chose: verify re-derives the
    # points but the status is not a plain pass (exit 3), and says why.
    model, x, y = pool
    family = build_family(model)
    table = compute_loss_table(model, family, GRID, (x, y), make_loss("label_01"), batch_size=500, progress=False)
    res = certify_from_table(model, family, table, make_loss("label_01"), alpha=0.1, delta=0.1,
                             calibration_indices=deployment_indices(len(x), 2000, 3))
    cert = copy.deepcopy(res.certificate)
    cert["calibration"] = {"source": "seeded", "pool_size": len(x), "n_cal": 2000, "seed": 3}
    cert["calibration_indices"] = deployment_indices(len(x), 2000, 3).tolist()
    cert["data"]["calibration_fingerprint"] = fingerprint(x, y, deployment_indices(len(x), 2000, 3))
    report = confprune.verify_certificate(cert, res.pruned_state, model, (x, y), data_from_registry=True)
    assert report.status == ISSUER and "could have been searched" in str(report), str(report)


def test_a_seeded_draw_from_data_the_issuer_hands_over_is_not_a_plain_pass(pool):
    # Issue 25 (laundering): a caller declares its own points "seeded". A seed over a pool the
    # issuer assembled (here: only the points the pruned model gets right) proves nothing about
    # the choice of the pool; without data the verifier identified, the status says so.
    model, x, y = pool
    res, table = seeded_certificate(model, x, y)
    report = confprune.verify_certificate(res.certificate, res.pruned_state, model, (x, y))
    assert report.ok and report.status == ISSUER
    assert "calibration source" in str(report) and "RECORDED" in str(report)


def test_uncertified_honest_certificate_verifies(pool):
    model, x, y = pool
    res, _ = seeded_certificate(model, x, y, alpha=0.001)
    assert not res.certified
    report = confprune.verify_certificate(res.certificate, None, model, (x, y))
    assert report.ok, str(report)


def forged_hand_picked(res, table, model, x, y):
    """The audit's forgery: λ̂ moved to the last grid point (pool risk above α) with hand-picked
    calibration points the pruned model gets right; p-values, risks, export, checksum and
    fingerprint all recomputed with the library's own functions."""
    cert = copy.deepcopy(res.certificate)
    j = int(np.flatnonzero(table.losses.mean(1) > cert["alpha"])[0])  # the first λ whose true risk exceeds α
    right = np.flatnonzero(table.losses[j] == 0)
    assert right.size >= cert["n_cal"]
    idx = np.random.default_rng(0).permutation(right)[: cert["n_cal"]]
    losses = table.losses[:, idx]
    cert["calibration_indices"] = idx.tolist()
    cert["p_values"] = [float(p) for p in pvalues_from_losses("binomial", losses, cert["alpha"], cert["delta"])]
    cert["cal_risk_per_lambda"] = [float(r) for r in losses.astype(np.float64).mean(1)]
    cert["lambda_index"], cert["lambda_hat"], cert["cal_risk"] = j, GRID[j], 0.0
    family = build_family(model)
    cert["sparsity_pool"] = family.sparsity(GRID[j])
    cert["sparsity_model"] = round(family.sparsity(GRID[j]) * family.pool_size) / family.pool_size
    state = pruned_state_dict(model, family, GRID[j])
    cert["model"]["pruned_checksum"] = state_dict_checksum(state)
    cert["data"]["calibration_fingerprint"] = fingerprint(x, y, idx)
    return cert, state


def test_forgery_hand_picked_calibration_points_fails(pool):
    model, x, y = pool
    res, table = seeded_certificate(model, x, y)
    cert, state = forged_hand_picked(res, table, model, x, y)
    assert table.losses[cert["lambda_index"]].mean() > cert["alpha"] and cert["lambda_index"] > res.lambda_index
    report = confprune.verify_certificate(cert, state, model, (x, y))
    assert not report.ok and "calibration indices" in failed(report), str(report)
    assert "DIFFERENT" in next(c.detail for c in report.failed if c.name == "calibration indices")


def test_forgery_one_p_value_changed_fails(pool):
    # Fixed sequence would stop at a p-value of 0.9: the recomputed p-value and decision disagree.
    model, x, y = pool
    res, _ = seeded_certificate(model, x, y)
    cert = copy.deepcopy(res.certificate)
    cert["p_values"][3] = 0.9
    report = confprune.verify_certificate(cert, res.pruned_state, model, (x, y))
    assert "p_values" in failed(report), str(report)
    assert "recorded 0.9" in next(c.detail for c in report.failed if c.name == "p_values")


def test_forgery_bonferroni_moved_beyond_its_level_fails(pool):
    # A Bonferroni certificate moved to a λ whose p-value passes δ but not δ/G.
    model, x, y = pool
    _, table = seeded_certificate(model, x, y)
    fam_config = build_family(model).config
    for alpha in np.linspace(0.02, 0.6, 59):  # an α at which some λ's p-value lies in (δ/G, δ]
        draw = committed_draw(table_commitment(model, [fam_config], table, [RiskSpec("label_01", alpha, "binomial")],
                                               delta=0.1, fwer="bonferroni", n_cal=2000))
        cal = table.losses[:, deployment_indices(len(x), 2000, draw["seed"])]  # the set that certificate uses
        p = pvalues_from_losses("binomial", cal, alpha, 0.1)
        between = np.flatnonzero((p > 0.1 / len(GRID)) & (p <= 0.1))
        if between.size:
            break
    assert between.size
    res, _ = seeded_certificate(model, x, y, fwer="bonferroni", alpha=float(alpha))
    cert = copy.deepcopy(res.certificate)
    j = int(between[0])
    # A consistent forgery: every field moved to λ_j, the export rebuilt there.
    family = build_family(model)
    state = pruned_state_dict(model, family, GRID[j])
    cert.update(certified=True, lambda_index=j, lambda_hat=GRID[j], cal_risk=float(cal[j].astype(np.float64).mean()),
                sparsity_pool=family.sparsity(GRID[j]),
                sparsity_model=round(family.sparsity(GRID[j]) * family.pool_size) / family.pool_size,
                claim=claim_text(True, cert["alpha"], 0.1, 2000, "label_01", "binomial", "bonferroni"))
    cert["model"]["pruned_checksum"] = state_dict_checksum(state)
    report = confprune.verify_certificate(cert, state, model, (x, y))
    got = next(c for c in report.failed if c.name == "lambda_index")
    assert failed(report) <= {"lambda_index", "cal_risk", "sparsity_pool", "sparsity_model", "pruned model",
                              "model.pruned_checksum"}, str(report)
    assert f"recorded {j}" in got.detail and f"recomputed {res.lambda_index}" in got.detail


def test_forgery_edited_weight_with_rewritten_checksum_fails(pool):
    model, x, y = pool
    res, _ = seeded_certificate(model, x, y)
    state = {k: v.clone() for k, v in res.pruned_state.items()}
    state["2.weight"][0, 0] += 0.5
    cert = copy.deepcopy(res.certificate)
    cert["model"]["pruned_checksum"] = state_dict_checksum(state)
    report = confprune.verify_certificate(cert, state, model, (x, y))
    assert failed(report) == {"pruned model"}, str(report)
    assert "'2.weight'" in report.failed[0].detail


@pytest.mark.parametrize(
    "field,value,names",
    [
        ("lambda_hat", 0.05, {"lambda_hat"}),
        ("n_cal", 1999, {"n_cal"}),
        ("delta", 0.2, {"claim", "p_values"}),
        ("alpha", 0.2, {"alpha", "claim", "p_values"}),  # one risk is a list of one: its alpha is the claim's
        ("claim", "The pruned model is perfect.", {"claim"}),
        ("sparsity_pool", 0.99, {"sparsity_pool"}),
        ("cal_risk", 0.0, {"cal_risk"}),
        ("bound", "hb", {"bound", "claim", "p_values"}),
    ],
)
def test_forgery_of_a_claim_field_fails_naming_it(pool, field, value, names):
    model, x, y = pool
    res, _ = seeded_certificate(model, x, y)
    cert = copy.deepcopy(res.certificate)
    cert[field] = value
    report = confprune.verify_certificate(cert, res.pruned_state, model, (x, y))
    assert not report.ok and names & failed(report), (field, str(report))
    for check in report.failed:
        if check.name == field:
            assert "recorded" in check.detail and "recomputed" in check.detail


def test_other_data_or_other_dense_model_fail(pool):
    model, x, y = pool
    res, _ = seeded_certificate(model, x, y)
    x2 = x.clone()
    x2[5] += 1.0
    report = confprune.verify_certificate(res.certificate, res.pruned_state, model, (x2, y))
    assert {"data.data_fingerprint"} <= failed(report)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].weight[0, 0] += 1e-3
    report = confprune.verify_certificate(res.certificate, res.pruned_state, other, (x, y))
    assert "model.dense_checksum" in failed(report)


def test_issuer_chosen_calibration_is_never_a_plain_pass(pool):
    model, x, y = pool
    res = confprune.certify(model, (x[:2000], y[:2000]), alpha=0.1, delta=0.1, lambdas=GRID)
    assert res.certificate["calibration"] == {"source": "issuer", "order": "seeded_order", "order_seed": 0}
    report = confprune.verify_certificate(res.certificate, res.pruned_state, model, (x[:2000], y[:2000]))
    assert report.ok and report.status == ISSUER and report.status != PLAIN
    assert "issuer-chosen" in str(report)


def test_claim_text_is_regenerated_from_the_fields(pool):
    model, x, y = pool
    res, _ = seeded_certificate(model, x, y)
    c = res.certificate
    assert c["claim"] == claim_text(True, c["alpha"], c["delta"], c["n_cal"], "label_01", c["bound"], c["fwer"])
