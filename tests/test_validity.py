"""Monte Carlo validity of the guarantee on a known truth (method.md §5), with stated tolerances.

Every check compares an empirical frequency f over M independent replications with a nominal level
t. Under validity E[f] ≤ t, and the Monte Carlo standard error is at most sqrt(t(1−t)/M), so the
check is f ≤ t + 3·sqrt(t(1−t)/M) (a false alarm has probability ≈ 0.13% per check, seeds fixed).
"""

import numpy as np
import pytest

from confprune.stats import (
    BINARY_ONLY,
    BOUNDS,
    FWERS,
    NOT_CERTIFIED,
    certified_index,
    make_fwer,
    pvalues_from_sums,
    wsr_pvalue,
)

pytestmark = pytest.mark.statistical


def tolerance(t: float, m: int) -> float:
    return 3.0 * np.sqrt(t * (1 - t) / m)


def pvalues(bound: str, losses: np.ndarray, alpha: float, delta: float) -> np.ndarray:
    """p-values along the last axis (n calibration points)."""
    if bound == "wsr":
        return wsr_pvalue(losses, alpha, delta)
    n = losses.shape[-1]
    return pvalues_from_sums(bound, losses.sum(-1), n, alpha)


@pytest.mark.parametrize("bound", BOUNDS)
def test_super_uniform_under_the_null(bound):
    # True risk exactly α: Bernoulli(α) losses (binary, so every bound applies).
    alpha, n, m = 0.1, 200, 20_000
    rng = np.random.default_rng(123)
    losses = (rng.random((m, n)) < alpha).astype(float)
    p = pvalues(bound, losses, alpha, delta=0.1)
    for t in (0.01, 0.05, 0.1, 0.2):
        freq = float(np.mean(p <= t))
        assert freq <= t + tolerance(t, m), (bound, t, freq)


@pytest.mark.parametrize("bound", [b for b in BOUNDS if b not in BINARY_ONLY])
def test_super_uniform_for_fractional_losses(bound):
    # Beta losses with mean exactly α: a non-binary null for the bounds valid on [0, 1].
    alpha, n, m = 0.1, 200, 10_000
    rng = np.random.default_rng(7)
    losses = rng.beta(0.5, 4.5, size=(m, n))  # mean 0.5 / 5 = 0.1
    p = pvalues(bound, losses, alpha, delta=0.1)
    for t in (0.05, 0.1, 0.2):
        assert float(np.mean(p <= t)) <= t + tolerance(t, m)


def simulate(r: np.ndarray, n: int, reps: int, seed: int) -> np.ndarray:
    """Nested binary losses L_i(λ_j) = 1{U_i < r(λ_j)}: shape (G, reps, n), true risk r exactly."""
    u = np.random.default_rng(seed).random((reps, n))
    return (u[None] < r[:, None, None]).astype(np.float32)


# Every registered bound and procedure is validity-tested: the lists come from the registries.
@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("fwer", list(FWERS))
def test_fwer_on_known_truth(bound, fwer):
    # Increasing risk curve with a fine grid around α, so the procedures are close to tight.
    alpha, delta, n, reps = 0.1, 0.1, 300, 2000
    r = np.linspace(0.0, 0.25, 26)
    losses = simulate(r, n, reps, seed=11)
    p = pvalues(bound, losses, alpha, delta)  # (G, reps)
    idx = certified_index(make_fwer(fwer).reject(p, delta))
    certified = idx != NOT_CERTIFIED
    bad = certified & (r[np.where(certified, idx, 0)] > alpha)
    assert certified.mean() > 0.5  # the test has power: most replications certify something
    assert bad.mean() <= delta + tolerance(delta, reps), (bound, fwer, bad.mean())


def test_negative_control_uncorrected_selection_fails_the_check():
    # Choosing the largest λ whose own p-value is ≤ δ (no FWER control, no ordering) is invalid;
    # the known-truth check must catch it, or the check above could not fail.
    alpha, delta, n, reps = 0.1, 0.1, 300, 2000
    r = np.full(26, alpha + 0.005)  # every null true, risk just above α
    losses = (np.random.default_rng(5).random((26, reps, n)) < r[:, None, None]).astype(np.float32)
    p = pvalues("binomial", losses, alpha, delta)
    bad = (p <= delta).any(axis=0)
    assert bad.mean() > delta + tolerance(delta, reps)


@pytest.mark.parametrize("bound", ["binomial", "hb", "wsr"])
def test_iid_validation_on_a_table_with_known_risk(bound):
    # A table whose row means cross α inside the grid: the i.i.d. check must find P(r(λ̂) > α) ≤ δ.
    g, n = 30, 4000
    r = np.linspace(0.0, 0.3, g)
    u = np.random.default_rng(3).random(n)
    losses = (u[None] < r[:, None]).astype(np.float32)
    from confprune.stats import iid_validation

    reps = 2000 if bound != "wsr" else 400
    res = iid_validation(losses, n_cal=500, n_reps=reps, alpha=0.1, delta=0.1, bound=bound)
    assert 1 - res.coverage <= 0.1 + tolerance(0.1, reps)
    assert np.mean(res.lambda_index >= 0) > 0.5


def test_iid_validation_catches_an_invalid_procedure():
    # Negative control: with δ mis-set to 0.5 while claiming 0.1, violations exceed 0.1.
    g, n = 30, 4000
    r = np.linspace(0.0, 0.3, g)
    u = np.random.default_rng(3).random(n)
    losses = (u[None] < r[:, None]).astype(np.float32)
    from confprune.stats import iid_validation

    res = iid_validation(losses, n_cal=500, n_reps=2000, alpha=0.1, delta=0.5, bound="binomial")
    assert 1 - res.coverage > 0.1 + tolerance(0.1, 2000)
