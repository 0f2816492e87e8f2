"""p-values against independent computations, sanity values, edge cases and properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from confprune.stats import (
    bentkus_pvalue,
    binomial_pvalue,
    hb_pvalue,
    hoeffding_pvalue,
    max_certified_count,
    pvalues_from_sums,
    wsr_pvalue,
)


def binom_cdf_exact(k: int, n: int, p: float) -> float:
    """P(Binom(n, p) ≤ k) by summing exact pmf terms (independent of scipy.stats)."""
    return math.fsum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(0, k + 1))


def hoeffding_reference(r: float, n: int, a: float) -> float:
    r = min(r, a)
    kl = (r * math.log(r / a) if r > 0 else 0.0) + (
        (1 - r) * math.log((1 - r) / (1 - a)) if r < 1 else 0.0
    )
    return math.exp(-n * kl)


CASES = [(50, 0, 0.1), (50, 3, 0.1), (200, 7, 0.05), (200, 30, 0.05), (1000, 38, 0.05), (120, 120, 0.3)]


@pytest.mark.parametrize("n,k,a", CASES)
def test_binomial_matches_exact_sum_and_incomplete_beta(n, k, a):
    p = float(binomial_pvalue(np.array(k), n, a))
    assert p == pytest.approx(binom_cdf_exact(k, n, a), rel=1e-9, abs=1e-300)
    if k < n:  # P(X ≤ k) = I_{1−a}(n − k, k + 1)
        assert p == pytest.approx(special.betainc(n - k, k + 1, 1 - a), rel=1e-9)


@pytest.mark.parametrize("n,k,a", CASES)
def test_hoeffding_bentkus_hb_match_references(n, k, a):
    r = k / n
    ph = float(hoeffding_pvalue(np.array(r), n, a))
    pb = float(bentkus_pvalue(np.array(r), n, a))
    assert ph == pytest.approx(hoeffding_reference(r, n, a), rel=1e-9)
    assert pb == pytest.approx(math.e * binom_cdf_exact(k, n, a), rel=1e-9)
    assert float(hb_pvalue(np.array(r), n, a)) == pytest.approx(min(ph, pb), rel=1e-12)


@pytest.mark.parametrize(
    "n,alpha,binomial,hb",
    [(9000, 0.03, 243, 236), (9000, 0.05, 415, 406), (9000, 0.10, 852, 840), (1000, 0.05, 38, 35)],
)
def test_sanity_values_from_method_doc(n, alpha, binomial, hb):
    assert max_certified_count("binomial", n, alpha, 0.05) == binomial
    assert max_certified_count("hb", n, alpha, 0.05) == hb


def test_edge_values_exact_and_never_nan():
    n, a = 100, 0.1
    assert float(hoeffding_pvalue(np.array(0.0), n, a)) == pytest.approx((1 - a) ** n, rel=1e-12)
    for r in (a, 0.5, 1.0):
        assert float(hoeffding_pvalue(np.array(r), n, a)) == 1.0
    assert float(binomial_pvalue(np.array(0), n, a)) == pytest.approx((1 - a) ** n, rel=1e-12)
    assert float(binomial_pvalue(np.array(n), n, a)) == 1.0
    r = np.array([0.0, 1e-12, 0.05, a, 1.0])
    for fn in (hoeffding_pvalue, bentkus_pvalue, hb_pvalue):
        assert np.all(np.isfinite(fn(r, n, a)))
    # Bentkus is allowed to exceed 1 (it is still a valid p-value); HB is ≤ 1 through Hoeffding.
    assert float(bentkus_pvalue(np.array(1.0), n, a)) == pytest.approx(math.e)
    assert float(hb_pvalue(np.array(1.0), n, a)) == 1.0


def test_n_equals_one():
    a = 0.2
    assert float(binomial_pvalue(np.array(0), 1, a)) == pytest.approx(0.8)
    assert float(binomial_pvalue(np.array(1), 1, a)) == 1.0
    assert float(hoeffding_pvalue(np.array(0.0), 1, a)) == pytest.approx(0.8)
    assert 0 <= float(wsr_pvalue(np.array([0.0]), a, 0.1)) <= 1


def test_fractional_loss_count_uses_ceiling_with_tolerance():
    # n·R̂ = 3 exactly but computed in floating point as 3.0000000000000004: the count is 3, not 4.
    n = 10
    r = 0.1 + 0.2  # 0.30000000000000004
    assert float(bentkus_pvalue(np.array(r), n, 0.5)) == pytest.approx(math.e * binom_cdf_exact(3, n, 0.5))


def test_binomial_refuses_fractional_counts():
    with pytest.raises(ValueError, match="integer"):
        binomial_pvalue(np.array([3.5]), 10, 0.1)
    with pytest.raises(ValueError, match="wsr"):
        pvalues_from_sums("wsr", np.array([1.0]), 10, 0.1)
    with pytest.raises(ValueError, match="alpha"):
        hoeffding_pvalue(np.array(0.1), 10, 1.5)


def wsr_reference(x: np.ndarray, alpha: float, delta: float) -> float:
    """Direct transcription of the RCPS reference code (WSR_mu_plus), loop form."""
    n = len(x)
    mu = np.empty(n)
    sig = np.empty(n)
    s, s2 = 0.0, 0.0
    for i in range(n):
        s += x[i]
        mu[i] = (0.5 + s) / (i + 2)
        s2 += (x[i] - mu[i]) ** 2
        sig[i] = (0.25 + s2) / (i + 2)
    sig_prev = np.concatenate([[0.25], sig[:-1]])
    nu = np.minimum(1.0, np.sqrt(2 * np.log(1 / delta) / (n * sig_prev)))
    k = np.cumprod(1 - nu * (x - alpha))
    return min(1.0, 1.0 / k.max())


@pytest.mark.parametrize("seed", range(4))
def test_wsr_matches_reference_loop(seed):
    rng = np.random.default_rng(seed)
    x = rng.beta(0.5, 6.0, size=(3, 400))
    got = wsr_pvalue(x, 0.1, 0.05)
    want = [wsr_reference(row, 0.1, 0.05) for row in x]
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_wsr_blocks_and_threads_agree_with_single_block(monkeypatch):
    import confprune.stats.pvalues as pv

    rng = np.random.default_rng(7)
    x = (rng.random((64, 300)) < 0.05).astype(float)
    full = wsr_pvalue(x, 0.1, 0.1)
    monkeypatch.setattr(pv, "_WSR_BLOCK_BYTES", 8 * 300 * 5)  # 5 rows a block, several threads
    np.testing.assert_array_equal(wsr_pvalue(x, 0.1, 0.1), full)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    alpha=st.floats(0.01, 0.5),
    data=st.data(),
)
def test_mean_bounds_monotone_in_risk_and_in_unit_interval(n, alpha, data):
    k1 = data.draw(st.integers(0, n))
    k2 = data.draw(st.integers(k1, n))
    for bound in ("binomial", "hoeffding", "bentkus", "hb"):
        p1, p2 = pvalues_from_sums(bound, np.array([k1, k2]), n, alpha)
        assert p1 <= p2 + 1e-12, bound
        assert 0.0 <= min(p1, 1.0) <= 1.0 and np.isfinite(p2)
    # binomial is the tightest of the binary-valid bounds: never larger than HB/e·... (it is exact)
    pb = pvalues_from_sums("binomial", np.array([k1]), n, alpha)[0]
    ph = pvalues_from_sums("hb", np.array([k1]), n, alpha)[0]
    assert pb <= np.e * ph + 1e-12


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 200), alpha=st.floats(0.02, 0.5))
def test_wsr_in_unit_interval_and_extremes(seed, n, alpha):
    rng = np.random.default_rng(seed)
    p = wsr_pvalue(rng.random((2, n)), alpha, 0.1)
    assert np.all((0.0 <= p) & (p <= 1.0))
    assert wsr_pvalue(np.ones(n), alpha, 0.1) == 1.0  # losses all above α: no evidence at all


def test_binom_cdf_is_scipy_stats_bit_for_bit():
    """The p-values call SciPy's Boost binomial CDF ufunc directly (importing scipy.stats costs
    ~0.6 s in every job process); it must stay identical to the public scipy.stats.binom.cdf,
    out-of-range counts included."""
    from scipy import stats

    from confprune.stats.ltt import clopper_pearson
    from confprune.stats.pvalues import binom_cdf

    for n in (1, 2, 7, 100, 1000, 9000):
        k = np.arange(-2, n + 3)
        for a in (1e-4, 0.01, 0.03, 0.1, 0.5, 0.9):
            np.testing.assert_array_equal(binom_cdf(k, n, a), stats.binom.cdf(k, n, a))
    for k, n in ((0, 10), (1, 10), (9, 10), (10, 10), (3, 1000), (950, 1000), (1000, 1000)):
        a = 1 - 0.95  # as clopper_pearson computes it
        lo = 0.0 if k == 0 else stats.beta.ppf(a / 2, k, n - k + 1)
        hi = 1.0 if k == n else stats.beta.ppf(1 - a / 2, k + 1, n - k)
        assert clopper_pearson(k, n) == (lo, hi)


@pytest.mark.parametrize("bad", [np.nan, -0.1, 1.5])
def test_direct_pvalue_calls_refuse_nan_and_out_of_range_input(bad):
    # Issue 26: these returned NaN (a NaN p-value never rejects: a silent loss) or nonsense.
    for fn in (hoeffding_pvalue, bentkus_pvalue, hb_pvalue):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            fn(np.array([0.01, bad]), 100, 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wsr_pvalue(np.array([[0.0, bad, 0.0]]), 0.1, 0.1)
    with pytest.raises(ValueError):
        binomial_pvalue(np.array([bad * 10]), 10, 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pvalues_from_sums("hb", np.array([bad * 10]), 10, 0.1)


def test_sums_at_the_ends_of_the_range_are_accepted():
    # Float rounding of a sum of n ones may land a hair above n: that is absorbed, not refused.
    p = pvalues_from_sums("hb", np.array([0.0, 10.0 * (1 + 1e-12)]), 10, 0.5)
    assert p[1] == 1.0 and 0 < p[0] < 1
