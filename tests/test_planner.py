"""Tests for the calibration planner (confprune.stats.planner) against exact values and simulation.

With nested binary losses L_i(λ_j) = 1{U_i < r_j} and fixed-sequence testing, λ̂ ≥ j exactly when
the count at the largest risk among r_0..r_j is ≤ c(n), so P(λ̂ ≥ j) = P(Binom(n, max_{i≤j} r_i) ≤
c(n)) is known exactly. Monte Carlo estimates over R replications have standard error
sqrt(p(1−p)/R); with G ≈ 20 correlated grid points checked at once we allow 4 standard errors
(family-wise false alarm ≤ 20 × 6e-5 ≈ 0.13%, seeds fixed).
"""

import numpy as np
import pytest

from confprune.stats.fwer import FixedSequence, certified_index
from confprune.stats.multirisk import min_achievable_pvalue
from confprune.stats.planner import (
    expected_outcome,
    feasibility,
    min_calibration_size,
    required_n,
)
from confprune.stats.pvalues import binom_cdf, max_certified_count, pvalues_from_sums

CURVE = np.linspace(0.0, 0.16, 17)  # binary risk curve over a 17-point grid
ALPHA, DELTA = 0.1, 0.1


def exact_p_at_least(curve: np.ndarray, n: int, alpha: float, delta: float) -> np.ndarray:
    c = max_certified_count("binomial", n, alpha, delta)
    bottleneck = np.maximum.accumulate(curve)
    return np.array([float(binom_cdf(np.array(c), n, r)) if c >= 0 else 0.0 for r in bottleneck])


def nested_table(curve: np.ndarray, n: int, rng) -> np.ndarray:
    return (rng.random(n)[None, :] < curve[:, None]).astype(np.float32)


# ----------------------------------------------------------------------------- expected_outcome


@pytest.mark.statistical
def test_expected_outcome_on_a_curve_matches_the_exact_law_and_a_direct_simulation():
    n, reps = 400, 4000
    out = expected_outcome(CURVE, n, ALPHA, DELTA, reps=reps, seed=1, lambdas=np.linspace(0, 0.8, 17))
    exact = exact_p_at_least(CURVE, n, ALPHA, DELTA)
    se = np.sqrt(exact * (1 - exact) / reps)
    assert np.all(np.abs(out.p_at_least - exact) <= 4 * se + 1e-12)
    assert out.p_certify == pytest.approx(out.p_at_least[0])
    # Direct simulation: per-sample nested losses, p-values and fixed sequence, independent seed.
    rng = np.random.default_rng(2)
    u = rng.random((reps, n))
    counts = (u[None] < CURVE[:, None, None]).sum(axis=2)  # (G, reps)
    idx = certified_index(FixedSequence().reject(pvalues_from_sums("binomial", counts, n, ALPHA), DELTA))
    direct = (idx[None, :] >= np.arange(CURVE.size)[:, None]).mean(axis=1)
    pooled = (direct + out.p_at_least) / 2
    assert np.all(np.abs(direct - out.p_at_least) <= 4 * np.sqrt(2 * pooled * (1 - pooled) / reps) + 1e-12)
    # Quantiles are grid indices, and a value lookup is available.
    assert -1 <= out.q05_index <= out.median_index <= out.q95_index < CURVE.size
    assert out.value(out.median_index) == pytest.approx(0.05 * out.median_index)


@pytest.mark.statistical
def test_negative_control_the_coupling_matters_and_union_is_safe():
    # Independent losses across λ (not nested): the nested ("bottleneck") law no longer holds,
    # and the 4-s.e. check above detects it; the union bound stays below the simulated power.
    n, reps = 400, 4000
    rng = np.random.default_rng(8)
    counts = rng.binomial(n, CURVE[:, None], size=(CURVE.size, reps))  # independent per grid point
    idx = certified_index(FixedSequence().reject(pvalues_from_sums("binomial", counts, n, ALPHA), DELTA))
    independent = (idx[None, :] >= np.arange(CURVE.size)[:, None]).mean(axis=1)
    nested = exact_p_at_least(CURVE, n, ALPHA, DELTA)
    se = np.sqrt(np.maximum(nested * (1 - nested), 1e-12) / reps)
    assert np.any(np.abs(independent - nested) > 4 * se + 0.05)
    union = np.array([brute_force_power(CURVE, j, n, "union") for j in range(CURVE.size)])
    assert np.all(independent >= union - 4 * np.sqrt(independent * (1 - independent) / reps) - 1e-12)


@pytest.mark.statistical
def test_expected_outcome_on_a_pilot_table_bootstraps_its_empirical_law():
    rng = np.random.default_rng(3)
    pilot = nested_table(CURVE, 20_000, rng)
    n, reps = 400, 3000
    out = expected_outcome(pilot, n, ALPHA, DELTA, reps=reps, seed=4)
    # Bootstrap draws from a nested pilot are nested with the pilot's row means as risks.
    exact = exact_p_at_least(pilot.mean(axis=1).astype(np.float64), n, ALPHA, DELTA)
    se = np.sqrt(exact * (1 - exact) / reps)
    assert np.all(np.abs(out.p_at_least - exact) <= 4 * se + 1e-12)


def test_expected_outcome_validates_inputs():
    with pytest.raises(ValueError, match="curve supports"):
        expected_outcome(CURVE, 100, ALPHA, DELTA, bound="wsr")
    with pytest.raises(ValueError, match="lambdas"):
        expected_outcome(CURVE, 100, ALPHA, DELTA, reps=10, lambdas=np.zeros(3))


# ----------------------------------------------------------------------------- required_n


def brute_force_power(curve: np.ndarray, target: int, n: int, dependence: str) -> float:
    if n == 0:
        return 0.0
    c = max_certified_count("binomial", n, ALPHA, DELTA)
    if c < 0:
        return 0.0
    risks = curve[: target + 1]
    if dependence == "nested":
        return float(binom_cdf(np.array(c), n, risks.max()))
    return max(0.0, 1.0 - sum(1.0 - float(binom_cdf(np.array(c), n, r)) for r in risks))


@pytest.mark.parametrize("dependence", ["nested", "union"])
def test_required_n_on_a_curve_agrees_with_brute_force(dependence):
    target, power = 8, 0.8  # r = 0.08 at the target, α = 0.1: n ≈ 1000, searched up to 2048–4096
    res = required_n(CURVE, target, ALPHA, DELTA, power=power, dependence=dependence)
    powers = np.array([brute_force_power(CURVE, target, n, dependence)
                       for n in range(res.searched_up_to + 1)])
    good = powers >= power
    assert res.first_n == int(np.argmax(good))
    assert res.n_cal == int(np.flatnonzero(~good)[-1]) + 1
    assert res.power == pytest.approx(powers[res.n_cal])
    assert res.n_cal >= res.first_n  # the power is saw-toothed: it can dip after its first crossing


def test_union_needs_at_least_the_nested_size_and_unreachable_targets():
    nested = required_n(CURVE, 6, ALPHA, DELTA, dependence="nested")
    union = required_n(CURVE, 6, ALPHA, DELTA, dependence="union")
    assert union.n_cal >= nested.n_cal > 0
    never = required_n(CURVE, 12, ALPHA, DELTA)  # r = 0.12 > α on the way
    assert never.n_cal == -1 and never.first_n == -1


@pytest.mark.statistical
def test_required_n_bootstrap_on_a_pilot_brackets_the_exact_crossing():
    rng = np.random.default_rng(5)
    pilot = nested_table(CURVE, 5000, rng)
    risks = pilot.mean(axis=1).astype(np.float64)
    target, power, reps = 5, 0.8, 800
    res = required_n(pilot, target, ALPHA, DELTA, power=power, reps=reps, seed=6)
    assert res.method == "bootstrap" and res.power >= power
    # The bisection stops where the Monte Carlo power crosses the target; the exact power there is
    # within 4 Monte Carlo standard errors (≤ 4 × 0.5/√reps) of the target on each side.
    slack = 4 * 0.5 / np.sqrt(reps)
    assert brute_force_power(risks, target, res.n_cal, "nested") >= power - slack
    assert brute_force_power(risks, target, res.n_cal - 1, "nested") < power + slack


# ----------------------------------------------------------------------------- feasibility


@pytest.mark.parametrize("bound", ["binomial", "hoeffding", "bentkus", "hb", "wsr"])
def test_min_calibration_size_is_the_first_n_where_zero_losses_certify(bound):
    n = min_calibration_size(bound, 0.1, 0.05)
    assert min_achievable_pvalue(bound, n, 0.1, 0.05) <= 0.05
    assert min_achievable_pvalue(bound, n - 1, 0.1, 0.05) > 0.05
    if bound == "binomial":
        assert n == 29  # 0.9^29 = 0.047 ≤ 0.05 < 0.9^28 = 0.052


def test_feasibility_edge_cases():
    too_few = feasibility(0.01, 20, 0.1, 0.05)
    assert too_few.status == "infeasible" and not too_few.feasible and "n_cal ≥ 29" in too_few.message
    dense_bad = feasibility(0.12, 5000, 0.1, 0.05)
    assert dense_bad.status == "infeasible" and "nothing can be certified" in dense_bad.message
    at_alpha = feasibility(0.1, 5000, 0.1, 0.05)
    assert at_alpha.status == "infeasible"
    close = feasibility(0.095, 1000, 0.1, 0.05)
    assert close.status == "unlikely" and close.p_dense_certified < 0.5
    fine = feasibility(0.02, 1000, 0.1, 0.05)
    assert fine.status == "feasible" and fine.p_dense_certified > 0.99
    assert fine.max_certified_count == max_certified_count("binomial", 1000, 0.1, 0.05)
    no_risk = feasibility(None, 1000, 0.1, 0.05, bound="wsr")
    assert no_risk.status == "feasible" and no_risk.max_certified_count is None


def test_required_n_low_power_targets_do_not_index_past_the_scan():
    # Issue 26: the scan ended on a saw tooth below the target and indexed past its end.
    size = required_n(np.array([0.0102]), 0, 0.02, 0.1, power=0.265, dependence="nested")
    assert size.n_cal > 0 and size.power >= 0.265
    c = max_certified_count("binomial", size.n_cal, 0.02, 0.1)
    assert float(binom_cdf(np.array(c), size.n_cal, 0.0102)) == pytest.approx(size.power)
    # Past n_cal the power stays at the target up to the end of the scan.
    for n in range(size.n_cal, min(size.searched_up_to, size.n_cal + 200) + 1):
        c = max_certified_count("binomial", n, 0.02, 0.1)
        assert float(binom_cdf(np.array(c), n, 0.0102)) >= 0.265


def test_plan_warns_when_it_extrapolates_beyond_the_pilot():
    from confprune.plan import plan
    from confprune.sweep import LossTable

    rng = np.random.default_rng(0)
    pilot = nested_table(CURVE[:8] / 4, 2000, rng)
    table = LossTable(grid=np.linspace(0, 0.7, 8), losses=pilot, sparsity=np.linspace(0, 0.7, 8))
    small = plan(table, alpha=0.05, delta=0.1, n_cal=1000, reps=50)
    assert not small.warnings()
    big = plan(table, alpha=0.05, delta=0.1, n_cal=8000, reps=50)
    assert any("4.0× the pilot's 2000 points" in w for w in big.warnings())
    assert big.warnings()[0] in big.lines()
