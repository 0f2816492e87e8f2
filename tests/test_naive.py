"""The naive plug-in choice and the oracle: hand cases, a loop reference, and a known truth on which
the naive rule violates α far more often than δ while LTT does not."""

from __future__ import annotations

import numpy as np
import pytest

from confprune.stats import (
    NOT_CERTIFIED,
    binomial_pvalue,
    draw_iid_calibration,
    draw_splits,
    iid_validation,
)
from confprune.stats.naive import (
    calibration_risks,
    heldout_exceeds,
    naive_choice,
    naive_index,
    oracle_index,
    risk_exceeds,
)


def table_with_risks(risks, n_points=100, seed=0):
    """(G, n_points) binary losses whose row means are exactly ``risks`` (multiples of 1/n_points)."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in risks:
        k = round(r * n_points)
        assert k == pytest.approx(r * n_points)
        row = np.zeros(n_points)
        row[rng.choice(n_points, k, replace=False)] = 1.0
        rows.append(row)
    return np.stack(rows)


@pytest.mark.parametrize(
    "alpha,expected",
    [
        (0.05, 1),  # 0.06 at index 2 stops the prefix, although index 3 (0.01) is below α again
        (0.10, 4),  # every grid point passes
        (0.01, 0),  # only the dense model
        (0.06, 3),  # risk exactly α passes
    ],
)
def test_oracle_is_the_longest_prefix_under_alpha(alpha, expected):
    losses = table_with_risks([0.0, 0.02, 0.06, 0.01, 0.08])
    assert oracle_index(losses, alpha) == expected


def test_oracle_reports_nothing_when_the_dense_model_fails():
    losses = table_with_risks([0.2, 0.1, 0.0])
    assert oracle_index(losses, 0.1) == NOT_CERTIFIED


def test_naive_index_scans_the_whole_grid():
    cal_risk = np.array(
        [  # grid × 4 splits
            [0.00, 0.00, 0.20, 0.01],
            [0.02, 0.06, 0.30, 0.01],
            [0.06, 0.01, 0.40, 0.05],
            [0.07, 0.09, 0.50, 0.04],
        ]
    )
    np.testing.assert_array_equal(naive_index(cal_risk, 0.05), [1, 2, NOT_CERTIFIED, 3])
    assert int(naive_index(cal_risk[:, 0], 0.05)) == 1  # a single calibration set


def reference_naive(losses, cal_indices, alpha):
    """Per-split loop: the calibration mean of every row, then the largest passing row."""
    risk = losses[:, cal_indices].mean(axis=1)
    passing = np.flatnonzero(risk <= alpha + 1e-12)
    return int(passing[-1]) if passing.size else NOT_CERTIFIED


@pytest.mark.parametrize("iid", [False, True])
def test_naive_choice_matches_a_loop_over_splits(iid):
    rng = np.random.default_rng(3)
    n_pool, g = 300, 12
    # Noisy, non-monotone risk curve with fractional losses: the rule must follow dips.
    base = np.clip(np.linspace(0.0, 0.2, g)[:, None] + 0.05 * rng.standard_normal((g, 1)), 0, 1)
    losses = np.clip(base + 0.1 * rng.standard_normal((g, n_pool)), 0, 1)
    splits = draw_iid_calibration(n_pool, 60, 40, seed=1) if iid else draw_splits(n_pool, 60, 100, 40, seed=1)
    got = naive_choice(losses, splits, alpha=0.08)
    pool_risk = losses.mean(axis=1)
    for s in range(splits.n_splits):
        cal = splits.orders[s] if iid else splits.cal_indices(s)  # with repetitions for i.i.d. draws
        want = reference_naive(losses, cal, 0.08)
        assert got.lambda_index[s] == want
        if want == NOT_CERTIFIED:
            assert not got.violated[s] and np.isnan(got.true_risk[s])
        else:
            assert got.cal_risk[s] == pytest.approx(losses[want, cal].mean())
            assert got.violated[s] == (pool_risk[want] > 0.08)
    np.testing.assert_allclose(calibration_risks(losses, splits)[:, 0],
                               losses[:, splits.orders[0] if iid else splits.cal_indices(0)].mean(axis=1))


def test_risk_exceeds_ignores_uncertified_splits():
    losses = table_with_risks([0.0, 0.04, 0.08])
    np.testing.assert_array_equal(risk_exceeds(losses, np.array([NOT_CERTIFIED, 0, 1, 2]), 0.05),
                                  [False, False, False, True])


def known_truth_pool(n_pool: int, true_risks: np.ndarray, seed: int) -> np.ndarray:
    """Nested binary losses L_i(λ_g) = 1{u_i < r_g}: every point that fails at λ_g fails at every
    larger λ (like pruning), and the pool risk of row g is the number of u_i below r_g over N."""
    u = (np.random.default_rng(seed).permutation(n_pool) + 0.5) / n_pool
    return (u[None, :] < true_risks[:, None]).astype(np.float64)


def test_naive_rule_violates_far_more_often_than_delta_and_ltt_does_not():
    """Known truth: calibration sets drawn i.i.d. from a finite pool, whose row means are then the
    exact risks. LTT (binomial, fixed sequence) must keep P(r(λ̂) > α) ≤ δ; the naive rule's
    violation probability is at least P(its calibration risk passes at the first grid point whose
    true risk exceeds α), an exact binomial probability ≈ 0.4 here."""
    alpha, delta, n_cal, reps, n_pool = 0.05, 0.05, 1000, 2000, 2000
    losses = known_truth_pool(n_pool, np.linspace(0.0, 0.1, 41), seed=0)
    true_risk = losses.mean(axis=1)
    first_bad = int(np.argmax(true_risk > alpha))
    assert true_risk[first_bad - 1] <= alpha < true_risk[first_bad]
    draws = draw_iid_calibration(n_pool, n_cal, reps, seed=7)

    ltt = iid_validation(losses, n_cal=n_cal, n_reps=reps, alpha=alpha, delta=delta, bound="binomial", draws=draws)
    naive = naive_choice(losses, draws, alpha=alpha)

    # Tolerance: 3 binomial Monte Carlo standard errors of a rate t over `reps` replications,
    # sqrt(t(1 − t)/reps), evaluated at the value being tested.
    def mc_se(t: float) -> float:
        return float(np.sqrt(t * (1 - t) / reps))

    ltt_rate = float(ltt.violated.mean())
    assert ltt_rate <= delta + 3 * mc_se(delta)

    # Exact lower bound on the naive violation probability: the calibration count at the first
    # bad grid point is Binom(n_cal, r) and "passes" when it is ≤ ⌊n_cal·α⌋.
    lower = float(binomial_pvalue(np.array([int(np.floor(n_cal * alpha))]), n_cal, float(true_risk[first_bad]))[0])
    assert lower > 0.3  # the setting makes the point: far above δ
    assert naive.violation_rate >= lower - 3 * mc_se(lower)
    # Negative control: the validity check that LTT passes fails for the naive rule.
    assert naive.violation_rate > delta + 3 * mc_se(delta)
    # And the naive rule prunes further than LTT wherever both choose.
    both = naive.chosen & (ltt.lambda_index != NOT_CERTIFIED)
    assert np.all(naive.lambda_index[both] >= ltt.lambda_index[both])
    # The oracle sits just below the first bad grid point.
    assert oracle_index(losses, alpha) == first_bad - 1


def test_naive_rule_is_valid_when_the_risk_jumps_far_above_alpha():
    """Control of the control: with no grid point whose risk is near α (0.02 then 0.2), the naive
    rule cannot overshoot, so its violation rate is ~0: the check above measures the rule, not an
    artefact of the simulation."""
    alpha, n_cal, reps, n_pool = 0.05, 1000, 500, 2000
    losses = known_truth_pool(n_pool, np.array([0.0, 0.01, 0.02, 0.2, 0.3]), seed=1)
    naive = naive_choice(losses, draw_iid_calibration(n_pool, n_cal, reps, seed=2), alpha=alpha)
    # P(Binom(1000, 0.2) ≤ 50) < 1e-30: no draw can pass at 0.2.
    assert naive.violation_rate == 0.0
    np.testing.assert_array_equal(naive.lambda_index, 2)


def test_heldout_scoring_detects_the_naive_rule_that_pool_scoring_on_splits_hides():
    """Issue 26: scoring 9000-of-10000 splits against the *pool* risk cannot detect an invalid rule
    (90% of the pool is the split's own calibration set, so the pool risk agrees with it). Known
    truth: nested losses on a pool of 10000 with a gently rising risk; the naive rule's exact
    (i.i.d.) violation rate is high. Held-out scoring on the same splits shows it; pool scoring on
    the splits does not (the column the certification table used to print). Tolerances: 3 binomial
    Monte Carlo standard errors at the rate tested, over S splits."""
    alpha, n_pool, n_cal, n_test, reps = 0.05, 10000, 9000, 1000, 600
    losses = known_truth_pool(n_pool, np.linspace(0.03, 0.07, 41), seed=3)

    def se(t: float) -> float:
        return float(np.sqrt(t * (1 - t) / reps))

    iid = naive_choice(losses, draw_iid_calibration(n_pool, n_cal, reps, seed=4), alpha=alpha)
    assert iid.violation_rate > 0.2  # the truth: the naive rule is invalid here
    splits = draw_splits(n_pool, n_cal, n_test, reps, seed=5)
    naive = naive_choice(losses, splits, alpha=alpha)
    pool_scored = float(risk_exceeds(losses, naive.lambda_index, alpha).mean())
    heldout = float(heldout_exceeds(losses, splits, naive.lambda_index, alpha).mean())
    truth = iid.violation_rate
    # The old column understates the truth by far more than its Monte Carlo error (0.10 vs 0.35 here) …
    assert pool_scored < truth - 3 * (se(truth) + se(pool_scored))
    # … the held-out column sees at least the truth (0.45 here), far above δ.
    assert heldout >= truth - 3 * (se(truth) + se(heldout))
    assert heldout > 0.05 + 3 * se(0.05)
    # LTT on the same splits, scored the same way (for reference, not a bound: held-out is noisy).
    ltt = iid_validation(losses, n_cal=n_cal, n_reps=reps, alpha=alpha, delta=0.05, bound="binomial", seed=4)
    assert ltt.violated.mean() <= 0.05 + 3 * se(0.05)


def test_heldout_exceeds_ignores_uncertified_splits_and_needs_test_points():
    losses = np.ones((3, 20))
    splits = draw_splits(20, 10, 10, 4, seed=0)
    out = heldout_exceeds(losses, splits, np.array([NOT_CERTIFIED, 0, 2, NOT_CERTIFIED]), alpha=0.5)
    np.testing.assert_array_equal(out, [False, True, True, False])
    with pytest.raises(ValueError, match="held-out"):
        heldout_exceeds(losses, draw_splits(20, 10, 0, 2, seed=0), np.array([0, 0]), alpha=0.5)
