"""The bound registry (stats.pvalues.BOUND_REGISTRY): every fact about a bound is its entry's,
checked here for every registered bound, so a new one is a single entry."""

from __future__ import annotations

import numpy as np
import pytest

from confprune.stats import BOUND_REGISTRY, BOUNDS, get_bound, pvalues_from_losses, resolve_bound

RNG = np.random.default_rng(0)
BINARY = (RNG.random((4, 300)) < np.array([[0.0], [0.02], [0.05], [0.2]])).astype(np.float64)
FRACTIONAL = RNG.random((4, 300)) * np.array([[0.0], [0.04], [0.1], [0.4]])


@pytest.mark.parametrize("name", BOUNDS)
def test_every_entry_answers_what_the_code_asks(name):
    bound = get_bound(name)
    assert bound.name == name and BOUND_REGISTRY[name] is bound and bound.summary
    table = BINARY if bound.binary_only else FRACTIONAL
    p = bound.from_losses(table, 0.1, 0.1)
    assert p.shape == (4,) and np.all(p >= 0) and not np.isnan(p).any()
    np.testing.assert_array_equal(p, pvalues_from_losses(name, table, 0.1, 0.1))
    if bound.sequential:
        with pytest.raises(ValueError, match="ordered losses"):
            bound.from_sums(table.sum(axis=1), 300, 0.1)
    else:
        np.testing.assert_allclose(bound.from_sums(table.sum(axis=1), 300, 0.1), p, rtol=1e-12)
    assert bound.min_pvalue(0, 0.1, 0.1) == 1.0
    assert bound.min_pvalue(300, 0.1, 0.1) == pytest.approx(float(bound.from_losses(np.zeros((1, 300)), 0.1, 0.1)[0]))
    assert bound.min_pvalue(600, 0.1, 0.1) <= bound.min_pvalue(300, 0.1, 0.1)  # more points, smaller floor


@pytest.mark.parametrize("name", [b for b in BOUNDS if get_bound(b).binary_only])
def test_binary_only_bounds_refuse_fractional_tables(name):
    with pytest.raises(ValueError, match="needs binary losses"):
        get_bound(name).check_table(FRACTIONAL)
    with pytest.raises(ValueError, match="needs binary losses"):
        resolve_bound(name, FRACTIONAL)


def test_the_auto_rule_and_unknown_names():
    assert resolve_bound("auto", BINARY) == "binomial"
    assert resolve_bound("auto", FRACTIONAL) == "hb"
    assert resolve_bound("wsr", FRACTIONAL) == "wsr"
    with pytest.raises(ValueError, match="unknown bound 'bogus'; allowed: binomial"):
        get_bound("bogus")
