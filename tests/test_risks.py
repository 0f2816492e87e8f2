"""Several risks on loss tables (stats/risks.py): known-truth validity of the combined decision for
two mean risks, the accuracy drop and per-class risks, with negative controls.

Each check compares a violation frequency f over M i.i.d. calibration draws from a large pool
(whose risks are then the exact truth) with δ: f ≤ δ + 3·sqrt(δ(1−δ)/M) (false alarm ≈ 0.13%)."""

from __future__ import annotations

import numpy as np
import pytest

from confprune.stats import draw_iid_calibration, iid_validation
from confprune.stats.risks import RiskSpec, calibrate_risks, iid_validate_risks, validate_risks

pytestmark = pytest.mark.statistical
DELTA, REPS = 0.1, 1000


def tol(m: int = REPS) -> float:
    return 3 * np.sqrt(DELTA * (1 - DELTA) / m)


def nested_pool(n: int = 20000, g: int = 30, seed: int = 0):
    """label_01 and disagreement tables whose risks grow with λ: nested errors, a dense error of
    2% (row 0), a disagreement that starts at 0."""
    rng = np.random.default_rng(seed)
    u, v = rng.random(n), rng.random(n)
    r = np.linspace(0.02, 0.14, g)
    label = (u[None] < r[:, None]).astype(np.float32)  # row 0: the dense model's errors (2%)
    dis = ((v[None] < np.linspace(0.0, 0.2, g)[:, None]) | (label != label[0])).astype(np.float32)
    return {"label_01": label, "disagreement": dis}


def dense_of(tables):
    """The dense model's own label_01 row: here the λ = 0 row of the simulated grid."""
    return {"label_01": tables["label_01"][0]}


@pytest.mark.parametrize("specs", [
    [RiskSpec("label_01", 0.06), RiskSpec("disagreement", 0.05)],
    [RiskSpec("label_01", 0.06, bound="hb"), RiskSpec("disagreement", 0.05, bound="hb")],
    [RiskSpec("accuracy_drop", 0.03)],
    [RiskSpec("accuracy_drop", 0.03, bound="wsr")],
])
def test_several_risks_and_the_drop_hold_on_a_known_truth(specs):
    tables = nested_pool()
    draws = draw_iid_calibration(20000, 800, REPS, seed=1)
    res = iid_validate_risks(tables, specs, draws, delta=DELTA, dense=dense_of(tables))
    assert 1 - res.coverage <= DELTA + tol(), (specs, res.coverage)
    assert (res.lambda_index > 0).mean() > 0.5  # the check has power


@pytest.mark.parametrize("bound", ["exact", "wsr"])
def test_the_drop_is_measured_against_the_dense_model_on_a_grid_that_skips_zero(bound):
    # A grid that starts at λ = 0.3 (row 10 of the simulated one, true drop 0.041 > α = 0.03): the
    # old wiring took its first row as the reference, so the drop there was 0 and λ = 0.3 was
    # always "certified". Against the dense model, nothing may be certified more than δ of the time.
    tables = nested_pool()
    late = {k: t[10:] for k, t in tables.items()}
    truth = late["label_01"].mean(1) - tables["label_01"][0].mean()
    assert truth[0] > 0.03  # every grid point of the late grid violates the drop's α
    spec = [RiskSpec("accuracy_drop", 0.03, bound=bound)]
    draws = draw_iid_calibration(20000, 800, REPS, seed=1)
    res = iid_validate_risks(late, spec, draws, delta=DELTA, dense=dense_of(tables))
    assert 1 - res.coverage <= DELTA + tol()
    assert (res.lambda_index >= 0).mean() <= DELTA + tol()
    # Negative control: the first row of the late grid as the reference certifies it every time.
    wrong = iid_validate_risks(late, spec, draws, delta=DELTA, dense={"label_01": late["label_01"][0]})
    assert (wrong.lambda_index >= 0).mean() > 0.99
    assert (wrong.lambda_index >= 0).mean() > DELTA + tol()


def test_the_drop_without_the_dense_row_or_at_alpha_zero_is_refused():
    tables = nested_pool(n=2000)
    draws = draw_iid_calibration(2000, 500, 10, seed=1)
    with pytest.raises(ValueError, match="dense model's own per-sample label_01"):
        iid_validate_risks(tables, [RiskSpec("accuracy_drop", 0.03)], draws, delta=DELTA)
    with pytest.raises(ValueError, match="can never be certified"):
        iid_validate_risks(tables, [RiskSpec("accuracy_drop", 0.0)], draws, delta=DELTA, dense=dense_of(tables))
    with pytest.raises(ValueError, match="gamma"):
        iid_validate_risks(tables, [RiskSpec("accuracy_drop", 0.03, gamma=1.5)], draws, delta=DELTA,
                           dense=dense_of(tables))


def test_taking_the_smallest_p_value_over_risks_fails_the_check():
    # Negative control: certifying when *some* risk passes (min over risks) is invalid.
    tables = nested_pool()
    draws = draw_iid_calibration(20000, 800, REPS, seed=1)
    a = iid_validation(tables["label_01"], n_cal=800, n_reps=REPS, alpha=0.06, delta=DELTA, bound="binomial", seed=1)
    b = iid_validation(tables["disagreement"], n_cal=800, n_reps=REPS, alpha=0.05, delta=DELTA, bound="binomial", seed=1)
    larger = np.maximum(a.lambda_index, b.lambda_index)  # what min-over-p-values would certify (fixed sequence)
    truth = (tables["label_01"].mean(1) > 0.06) | (tables["disagreement"].mean(1) > 0.05)
    assert np.mean((larger >= 0) & truth[np.maximum(larger, 0)]) > DELTA + tol()
    both = iid_validate_risks(tables, [RiskSpec("label_01", 0.06), RiskSpec("disagreement", 0.05)], draws, delta=DELTA)
    assert 1 - both.coverage <= DELTA + tol()


def test_the_drop_test_certifies_more_than_counting_new_errors():
    # Counting only the new errors (1{pruned wrong, dense right}) bounds the drop from above with the
    # binomial: valid, but it ignores the errors pruning fixes; the paired drop test certifies more.
    # (The invalid control for the drop, a binomial on the net count, is in tests/test_drop.py.)
    tables = nested_pool()
    drop = np.clip(tables["label_01"] - tables["label_01"][0], 0, 1)  # only the new errors
    res = iid_validation(drop, n_cal=800, n_reps=REPS, alpha=0.03, delta=DELTA, bound="binomial", seed=1)
    true_drop = tables["label_01"].mean(1) - tables["label_01"][0].mean()
    assert 1 - res.coverage <= DELTA + tol()  # new errors alone bound the drop from above: valid, weaker
    exact = iid_validate_risks(tables, [RiskSpec("accuracy_drop", 0.03)], draw_iid_calibration(20000, 800, REPS, 1),
                               delta=DELTA, dense=dense_of(tables))
    assert np.median(exact.lambda_index) >= np.median(res.lambda_index)  # and the drop test certifies more
    assert true_drop[np.max(exact.lambda_index)] <= 0.03 + 0.01


def test_per_class_risks_hold_and_report_each_class():
    rng = np.random.default_rng(4)
    n, g = 20000, 25
    labels = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    base = np.array([0.01, 0.03, 0.06])[labels]  # the rarest class is the hardest
    u = rng.random(n)
    table = (u[None] < base[None] + np.linspace(0, 0.1, g)[:, None]).astype(np.float32)
    specs = [RiskSpec("label_01", 0.1, per_class=True)]
    res = iid_validate_risks({"label_01": table}, specs, draw_iid_calibration(n, 1500, REPS, 2), delta=DELTA,
                             labels=labels)
    assert 1 - res.coverage <= DELTA + tol()
    pooled = iid_validation(table, n_cal=1500, n_reps=REPS, alpha=0.1, delta=DELTA, bound="binomial", seed=2)
    assert np.median(pooled.lambda_index) > np.median(res.lambda_index)  # per class is stricter than pooled


def test_calibrate_and_validate_agree_on_one_split():
    tables = nested_pool(n=5000)
    specs = [RiskSpec("label_01", 0.06), RiskSpec("accuracy_drop", 0.03)]
    idx = np.random.default_rng(0).permutation(5000)[:2000]
    cal, each = calibrate_risks(tables, specs, idx, delta=DELTA, dense=dense_of(tables))
    assert set(each) == {"label_01<=0.06", "accuracy_drop<=0.03"}
    np.testing.assert_array_equal(cal.p_values, np.maximum(*each.values()))
    from confprune.stats import Splits

    mask = np.zeros((1, 5000), dtype=bool)
    mask[0, idx] = True
    split = Splits(cal_mask=mask, test_mask=~mask, order_seed=np.random.SeedSequence(0), orders=idx[None])
    v = validate_risks(tables, specs, split, delta=DELTA, dense=dense_of(tables))
    assert v.lambda_index[0] == cal.lambda_index
