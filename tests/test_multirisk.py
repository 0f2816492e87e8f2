"""Tests for several risks at once (confprune.stats.multirisk): intersection–union and per-class.

Monte Carlo checks compare a frequency f over M replications with its nominal level t: under
validity E[f] ≤ t with standard error ≤ sqrt(t(1−t)/M), so each check is f ≤ t + 3·sqrt(t(1−t)/M).
"""

import numpy as np
import pytest

from confprune.stats.fwer import NOT_CERTIFIED, FixedSequence, certified_index
from confprune.stats.multirisk import (
    combine_max,
    min_achievable_pvalue,
    per_class_pvalues,
    risk_pvalues,
)
from confprune.stats.pvalues import pvalues_from_losses, wsr_pvalue


def tolerance(t: float, m: int) -> float:
    return 3.0 * np.sqrt(t * (1 - t) / m)


# ----------------------------------------------------------------------------- unit tests


def test_combine_max_shapes_and_nan():
    p = np.array([[[0.1, 0.5]], [[0.3, 0.2]]])  # (K=2, G=1, S=2)
    np.testing.assert_array_equal(combine_max(p), [[0.3, 0.5]])
    with pytest.raises(ValueError, match="NaN"):
        combine_max(np.array([[0.1, np.nan]]))


def test_risk_pvalues_match_single_risk_pvalues():
    rng = np.random.default_rng(0)
    l1 = (rng.random((4, 200)) < 0.05).astype(float)
    l2 = rng.random((4, 200)) * 0.2
    p = risk_pvalues([l1, l2], [0.1, 0.15], 0.1, ["binomial", "hb"])
    assert p.shape == (2, 4)
    np.testing.assert_allclose(p[0], pvalues_from_losses("binomial", l1, 0.1, 0.1))
    np.testing.assert_allclose(p[1], pvalues_from_losses("hb", l2, 0.15, 0.1))
    with pytest.raises(ValueError, match="binary"):
        risk_pvalues([l2], 0.1, 0.1, "binomial")
    with pytest.raises(ValueError, match="shape"):
        risk_pvalues([l1, l2[:, :100]], 0.1, 0.1)
    with pytest.raises(ValueError, match="one per risk"):
        risk_pvalues([l1, l2], [0.1, 0.1, 0.1], 0.1)


def test_min_achievable_pvalue():
    assert min_achievable_pvalue("binomial", 80, 0.1, 0.1) == pytest.approx(0.9**80)
    assert min_achievable_pvalue("hb", 80, 0.1, 0.1) == pytest.approx(0.9**80)
    assert min_achievable_pvalue("bentkus", 80, 0.1, 0.1) == pytest.approx(np.e * 0.9**80)
    assert min_achievable_pvalue("wsr", 80, 0.1, 0.1) == pytest.approx(float(wsr_pvalue(np.zeros(80), 0.1, 0.1)))
    assert min_achievable_pvalue("binomial", 0, 0.1, 0.1) == 1.0


def test_per_class_report_fields():
    labels = np.array([0] * 300 + [1] * 10 + [2] * 90)
    losses = np.zeros((3, labels.size))
    losses[1, labels == 2] = 1.0  # class 2 fails completely at grid point 1
    res = per_class_pvalues(losses, labels, {0: 0.05, 1: 0.1, 2: 0.1, 7: 0.1}, delta=0.1, classes=[0, 1, 2, 7])
    np.testing.assert_array_equal(res.n_per_class, [300, 10, 90, 0])
    np.testing.assert_allclose(res.alpha_per_class[:3], [0.05, 0.1, 0.1])
    # 10 points at α = 0.1: even zero errors give 0.9^10 ≈ 0.35 > δ: can never certify.
    np.testing.assert_array_equal(res.can_certify, [True, False, True, False])
    np.testing.assert_allclose(res.min_pvalue[:3], [0.95**300, 0.9**10, 0.9**90])
    assert res.p_values.shape == (4, 3)
    assert np.isnan(res.risk[3]).all() and np.all(res.p_values[3] == 1.0)
    assert res.risk[2, 1] == 1.0 and res.p_values[2, 1] == 1.0
    np.testing.assert_allclose(res.combined, res.p_values.max(axis=0))
    with pytest.raises(ValueError, match="lacks"):
        per_class_pvalues(losses, labels, {0: 0.05}, delta=0.1)


def test_per_class_wsr_uses_each_class_in_a_random_order():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    losses = rng.random((2, 400)) * 0.1
    res = per_class_pvalues(losses, labels, 0.2, 0.1, "wsr", order_seed=None)
    np.testing.assert_allclose(res.p_values[0], wsr_pvalue(losses[:, labels == 0], 0.2, 0.1))


# ----------------------------------------------------------------------- validity (Monte Carlo)


@pytest.mark.statistical
def test_intersection_union_is_valid_without_correction():
    # Risk 1 sits exactly on its null (R = α), risk 2 is far below its α: P(max p ≤ u) ≤ u.
    n, m = 300, 20_000
    rng = np.random.default_rng(5)
    l1 = (rng.random((m, n)) < 0.1).astype(np.float32)
    l2 = (rng.random((m, n)) < 0.01).astype(np.float32)
    p = combine_max(risk_pvalues([l1, l2], [0.1, 0.1], 0.1, "binomial"))
    for u in (0.01, 0.05, 0.1):
        assert float(np.mean(p <= u)) <= u + tolerance(u, m)


def nested_losses(curve: np.ndarray, u: np.ndarray) -> np.ndarray:
    """L[j, r, i] = 1{u[r, i] < curve[j]}: nested binary losses with true risk curve[j]."""
    return (u[None] < curve[:, None, None]).astype(np.float32)


def violation_rate(p_combined: np.ndarray, violates: np.ndarray, delta: float) -> tuple[float, float]:
    """(P(some certified λ violates), P(certify anything)) for p of shape (G, reps) under FST."""
    rejected = FixedSequence().reject(p_combined, delta)
    bad = (rejected & violates[:, None]).any(axis=0)
    return float(bad.mean()), float((certified_index(rejected) != NOT_CERTIFIED).mean())


@pytest.mark.statistical
@pytest.mark.parametrize("bound", ["binomial", "hb"])
def test_two_risks_fixed_sequence_known_truth(bound):
    # Label error r1 and disagreement r2 both grow from 0 to 0.12 but have different tolerances:
    # r2 meets α2 = 0.05 first (index 10, exactly α2), r1 meets α1 = 0.1 only at index 20, so r2
    # binds. Their losses are correlated: half of the points share one uniform.
    g, n, reps, delta = 25, 300, 2000, 0.1
    alphas = (0.1, 0.05)
    r1 = np.linspace(0.0, 0.12, g)
    r2 = np.linspace(0.0, 0.12, g)
    violates = (r1 > alphas[0]) | (r2 > alphas[1])
    rng = np.random.default_rng(17)
    p_max, p_min = [], []
    for _ in range(reps // 500):  # blocks of 500 replications keep the tables small
        u1 = rng.random((500, n))
        u2 = np.where(rng.random((500, n)) < 0.5, u1, rng.random((500, n)))
        p = risk_pvalues([nested_losses(r1, u1), nested_losses(r2, u2)], alphas, delta, bound)
        p_max.append(combine_max(p))
        p_min.append(p.min(axis=0))
    rate, certified = violation_rate(np.concatenate(p_max, axis=1), violates, delta)
    assert certified > 0.5  # the procedure has power
    assert rate <= delta + tolerance(delta, reps), rate
    # Negative control: "certified if ANY risk passes" (min over risks) ignores the binding risk.
    bad_rate, _ = violation_rate(np.concatenate(p_min, axis=1), violates, delta)
    assert bad_rate > delta + tolerance(delta, reps) + 0.2, bad_rate


@pytest.mark.statistical
def test_per_class_fixed_sequence_known_truth():
    # Three classes of very different sizes; the smallest class's risk grows fastest and binds.
    sizes, g, reps, delta, alpha = (500, 200, 80), 30, 2000, 0.1, 0.1
    curves = np.stack([np.linspace(0, 0.15, g), np.linspace(0, 0.3, g), np.linspace(0, 0.6, g)])
    labels = np.repeat(np.arange(3), sizes)  # conditional validity: the labels are held fixed
    n = labels.size
    violates = (curves > alpha).any(axis=0)
    rng = np.random.default_rng(23)
    p_max, p_min = [], []
    for _ in range(reps // 250):
        u = rng.random((250, n))
        point_curve = curves[labels].T  # (G, n): point i follows its own class's risk curve
        losses = (u[None] < point_curve[:, None, :]).astype(np.float32)  # (G, 250, n)
        block_max, block_min = [], []
        for r in range(losses.shape[1]):
            res = per_class_pvalues(losses[:, r], labels, alpha, delta, "binomial")
            block_max.append(res.combined)
            block_min.append(res.p_values.min(axis=0))
        p_max.append(np.stack(block_max, axis=1))
        p_min.append(np.stack(block_min, axis=1))
    rate, certified = violation_rate(np.concatenate(p_max, axis=1), violates, delta)
    assert certified > 0.5
    assert rate <= delta + tolerance(delta, reps), rate
    bad_rate, _ = violation_rate(np.concatenate(p_min, axis=1), violates, delta)
    assert bad_rate > delta + tolerance(delta, reps) + 0.2, bad_rate
