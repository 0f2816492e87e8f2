"""Tests for the accuracy-drop p-values (confprune.stats.drop): exactness, validity, power, control.

Monte Carlo checks compare an empirical frequency f over M replications with a nominal level u;
under validity E[f] ≤ u and the standard error is at most sqrt(u(1−u)/M), so each check is
f ≤ u + 3·sqrt(u(1−u)/M) (false alarm ≈ 0.13% per check; seeds are fixed).
"""

import numpy as np
import pytest
from scipy.special import bdtr, gammaln

from confprune.stats.drop import (
    _boundary_cdf,
    discordance_upper_bound,
    drop_counts,
    drop_losses,
    drop_pvalues,
    drop_pvalues_from_losses,
    exact_drop_pvalue,
)
from confprune.stats.pvalues import binom_cdf, binomial_pvalue, wsr_pvalue


def tolerance(u: float, m: int) -> float:
    return 3.0 * np.sqrt(u * (1 - u) / m)


def boundary_cdf_direct(s: float, t: int, n: int, alpha: float) -> float:
    """P(T ≤ t) on the null boundary by the D-sum Σ_D Binom(D; n, s)·P(Binom(D, r) ≤ ⌊(t+D)/2⌋)."""
    if s == 0:
        return float(t >= 0)
    d = np.arange(n + 1)
    with np.errstate(divide="ignore"):
        log_pmf = (gammaln(n + 1) - gammaln(d + 1) - gammaln(n - d + 1)
                   + d * np.log(s) + (n - d) * np.log1p(-s))
    r = (s + alpha) / (2 * s)
    k = np.floor((t + d) / 2)
    inner = np.where(k < 0, 0.0, bdtr(np.clip(k, 0, d), d, r))
    return float(np.sum(np.exp(log_pmf) * inner))


def berger_boos_reference(n_plus: int, n_minus: int, n: int, alpha: float, gamma: float) -> float:
    """The Berger–Boos p-value by brute force: max of the D-sum over 400 points of [α, s_u], + γ."""
    s_u = float(discordance_upper_bound(n_plus + n_minus, n, gamma))
    if s_u < alpha:
        return gamma
    sup = max(boundary_cdf_direct(s, n_plus - n_minus, n, alpha) for s in np.linspace(alpha, s_u, 400))
    return min(1.0, sup + gamma)


def sample_drops(rng, p_plus: float, p_minus: float, m: int, n: int) -> np.ndarray:
    u = rng.random((m, n))
    return np.where(u < p_plus, 1, np.where(u < p_plus + p_minus, -1, 0)).astype(np.int8)


# ----------------------------------------------------------------------------- unit tests


def test_drop_losses_counts_and_broadcasting():
    pruned = np.array([[1, 0, 1, 0], [1, 1, 1, 0]], dtype=bool)
    dense = np.array([0, 1, 1, 0], dtype=bool)
    d = drop_losses(pruned, dense)
    np.testing.assert_array_equal(d, [[1, -1, 0, 0], [1, 0, 0, 0]])
    n_plus, n_minus = drop_counts(d)
    np.testing.assert_array_equal(n_plus, [1, 1])
    np.testing.assert_array_equal(n_minus, [1, 0])
    with pytest.raises(ValueError, match="0/1"):
        drop_losses(np.array([0.5, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\{-1, 0, 1\}"):
        drop_pvalues_from_losses(np.array([2, 0, 1]), 0.01, 0.1)
    with pytest.raises(ValueError, match="alpha"):
        drop_pvalues_from_losses(np.array([1, 0, 1]), -0.01, 0.1)
    with pytest.raises(ValueError, match="exceed"):
        exact_drop_pvalue(np.array([3]), np.array([3]), 5, 0.0, gamma=0.01)


@pytest.mark.parametrize("n, alpha", [(300, 0.01), (9000, 0.01), (200, 0.0)])
def test_fft_boundary_cdf_matches_the_direct_sum(n, alpha):
    s = np.array([max(alpha, 1e-3), 0.02, 0.3, 0.999])
    t = np.array([-40, 0, int(n * alpha), int(n * alpha) + 7, n // 10])
    computed = _boundary_cdf(s, t, n, alpha)
    exact = np.array([[boundary_cdf_direct(si, ti, n, alpha) for ti in t] for si in s])
    # The FFT result carries a +1e-10 safety margin: it must sit in [exact, exact + 2e-10]
    # (the D-sum itself is accurate to ~1e-11 at n = 9000).
    assert np.all(computed >= np.minimum(exact, 1.0) - 1e-11)
    assert np.all(computed <= exact + 2e-10)


@pytest.mark.parametrize("n, alpha", [(60, 0.0), (60, 0.05), (400, 0.01)])
def test_exact_pvalue_bounds_the_berger_boos_sup_tightly(n, alpha):
    rng = np.random.default_rng(n)
    gamma, tol = 0.005, 0.002
    n_plus = rng.integers(0, n // 4, 15)
    n_minus = rng.integers(0, n // 8, 15)
    p = exact_drop_pvalue(n_plus, n_minus, n, alpha, gamma=gamma, tolerance=tol)
    ref = np.array([berger_boos_reference(a, b, n, alpha, gamma) for a, b in zip(n_plus, n_minus, strict=True)])
    assert np.all(p >= ref)  # a rigorous upper bound of the sup (a 400-point grid under-estimates it)
    # ... and tight: at most 3·tolerance above it in the arcsine scale (see exact_drop_pvalue).
    assert np.all(np.arcsin(np.sqrt(p)) - np.arcsin(np.sqrt(ref)) <= 3 * tol)


def test_exact_pvalue_vectorised_over_grid_and_splits():
    rng = np.random.default_rng(3)
    n = 500
    n_plus = rng.integers(0, 40, size=(7, 5))
    n_minus = rng.integers(0, 20, size=(7, 5))
    p = exact_drop_pvalue(n_plus, n_minus, n, 0.02, gamma=0.01)
    assert p.shape == (7, 5)
    one = np.array([exact_drop_pvalue(a, b, n, 0.02, gamma=0.01) for a, b in zip(n_plus.ravel(), n_minus.ravel(), strict=True)])
    # Each observation's bound depends only on its own counts (up to the shared grid's resolution).
    np.testing.assert_allclose(p.ravel(), one, atol=2e-3)
    assert np.all(p >= 0.01) and np.all(p <= 1.0)


def test_wsr_drop_is_wsr_on_the_shifted_variable():
    rng = np.random.default_rng(0)
    d = sample_drops(rng, 0.02, 0.01, 4, 300)
    p = drop_pvalues_from_losses(d, 0.01, 0.1, "wsr", order_seed=None)
    np.testing.assert_allclose(p, wsr_pvalue((d + 1.0) / 2.0, 0.505, 0.1))
    pruned = d == 1
    dense = d == -1
    np.testing.assert_allclose(drop_pvalues(pruned, dense, 0.01, 0.1, "wsr", order_seed=None), p)


def test_all_concordant_and_alpha_zero():
    n = 2000
    zeros = np.zeros((1, n), dtype=np.int8)
    # α = 0: T = 0 is exactly the boundary mean, so nothing can be rejected.
    assert drop_pvalues_from_losses(zeros, 0.0, 0.1, "exact")[0] == 1.0
    # α = 0.01 with no discordance at all: s_u < α, so p = γ = δ/10 (rejects).
    assert drop_pvalues_from_losses(zeros, 0.01, 0.1, "exact")[0] == pytest.approx(0.01)
    assert drop_pvalues_from_losses(zeros, 0.01, 0.1, "wsr")[0] <= 0.1


# ----------------------------------------------------------------------- validity (Monte Carlo)

# Null points p₊ − p₋ = α: the discordance s = p₊ + p₋ ranges from its minimum (p₋ = 0) to 0.9.
NULL_POINTS = [(0.01, 0.01), (0.01, 0.03), (0.01, 0.3), (0.01, 0.9), (0.0, 0.002), (0.0, 0.2)]


@pytest.mark.statistical
@pytest.mark.parametrize("alpha, s", NULL_POINTS)
@pytest.mark.parametrize("method", ["exact", "wsr"])
def test_super_uniform_on_the_null_boundary(method, alpha, s):
    n, m = 400, 20_000
    rng = np.random.default_rng(int(1000 * s) + int(1e4 * alpha))
    d = sample_drops(rng, (s + alpha) / 2, (s - alpha) / 2, m, n)
    p = drop_pvalues_from_losses(d, alpha, 0.1, method, gamma=0.005, order_seed=None)
    for u in (0.01, 0.05, 0.1, 0.2):
        freq = float(np.mean(p <= u))
        assert freq <= u + tolerance(u, m), (method, alpha, s, u, freq)


@pytest.mark.statistical
def test_negative_control_net_count_binomial_is_invalid():
    # The naive plug-in: the binomial test at level α on the net count max(N₊ − N₋, 0), as if
    # the drop were a {0,1} loss. Var(T) = n(s − α²) ≫ nα(1−α) when discordance s ≫ α, so it
    # rejects far too often on the null boundary; the exact test stays valid on the same data.
    alpha, s, n, m, u = 0.01, 0.3, 2000, 4000, 0.05
    rng = np.random.default_rng(99)
    d = sample_drops(rng, (s + alpha) / 2, (s - alpha) / 2, m, n)
    n_plus, n_minus = drop_counts(d)
    naive = binomial_pvalue(np.maximum(n_plus - n_minus, 0), n, alpha)
    assert float(np.mean(naive <= u)) > u + tolerance(u, m) + 0.1
    exact = exact_drop_pvalue(n_plus, n_minus, n, alpha, gamma=0.005)
    assert float(np.mean(exact <= u)) <= u + tolerance(u, m)


@pytest.mark.statistical
def test_power_on_a_realistic_alternative():
    # Dense error 2%, pruned error 2.5%, discordance 1% ⇒ p₊ = 0.75%, p₋ = 0.25%, drop 0.5% < α = 1%.
    n, m, alpha, delta = 9000, 400, 0.01, 0.05
    probs = [0.0075, 0.0025, 0.99]
    rng = np.random.default_rng(2024)
    counts = rng.multinomial(n, probs, size=m)
    exact = exact_drop_pvalue(counts[:, 0], counts[:, 1], n, alpha, gamma=delta / 10)
    d = sample_drops(rng, probs[0], probs[1], m, n)
    wsr = drop_pvalues_from_losses(d, alpha, delta, "wsr", order_seed=None)
    # Measured (seeded): exact 0.99, wsr 0.98; 0.9 leaves > 4 Monte Carlo s.e. of room.
    assert float(np.mean(exact <= delta)) >= 0.9
    assert float(np.mean(wsr <= delta)) >= 0.9
    # Disagreement ≥ discordance = 1% = α here, so certifying disagreement ≤ α is hopeless:
    # even at its smallest possible value (= the discordance) the binomial test rejects ≤ δ.
    disagreement = counts[:, 0] + counts[:, 1]
    assert float(np.mean(binom_cdf(disagreement, n, alpha) <= delta)) <= delta + tolerance(delta, m)
