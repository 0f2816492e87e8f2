"""FWER procedures and LTT: hand-checked edge cases, split mechanics and input checking."""

import numpy as np
import pytest

from confprune.stats import (
    NOT_CERTIFIED,
    Bonferroni,
    FixedSequence,
    Holm,
    MultiStartFixedSequence,
    calibrate,
    certified_index,
    clopper_pearson,
    draw_splits,
    make_fwer,
    validate_splits,
)

PROCEDURES = [FixedSequence(), Bonferroni(), Holm(), MultiStartFixedSequence(3)]


@pytest.mark.parametrize("proc", PROCEDURES, ids=lambda p: p.name)
def test_all_certified_returns_last_index_without_error(proc):
    p = np.full(10, 1e-9)
    rejected = proc.reject(p, 0.05)
    assert rejected.all()
    assert int(certified_index(rejected)) == 9


@pytest.mark.parametrize("proc", PROCEDURES, ids=lambda p: p.name)
def test_none_certified_is_explicit(proc):
    rejected = proc.reject(np.full(10, 0.5), 0.05)
    assert not rejected.any()
    assert int(certified_index(rejected)) == NOT_CERTIFIED


def test_fixed_sequence_dense_not_rejected_certifies_nothing():
    # λ_1 (dense) fails even though later λ would pass: the paper code returned the most-pruned
    # model here; we must report "nothing certified".
    p = np.array([0.2, 0.001, 0.001, 0.001])
    assert int(certified_index(FixedSequence().reject(p, 0.05))) == NOT_CERTIFIED


def test_fixed_sequence_stops_at_first_failure():
    p = np.array([0.001, 0.01, 0.06, 0.001])
    np.testing.assert_array_equal(FixedSequence().reject(p, 0.05), [True, True, False, False])


def test_bonferroni_takes_largest_rejected():
    p = np.array([0.001, 0.5, 0.004, 0.02])  # δ/G = 0.0125
    rej = Bonferroni().reject(p, 0.05)
    np.testing.assert_array_equal(rej, [True, False, True, False])
    assert int(certified_index(rej)) == 2


def test_holm_by_hand_with_ties():
    # δ = 0.1, G = 4: thresholds 0.025, 0.0333, 0.05, 0.1 on the sorted p-values.
    p = np.array([0.03, 0.01, 0.03, 0.2])
    # sorted: 0.01 ≤ 0.025 ✓, 0.03 ≤ 0.0333 ✓, 0.03 ≤ 0.05 ✓, 0.2 > 0.1 ✗
    np.testing.assert_array_equal(Holm().reject(p, 0.1), [True, True, True, False])
    p = np.array([0.04, 0.01, 0.04, 0.2])  # second sorted 0.04 > 0.0333 stops everything after
    np.testing.assert_array_equal(Holm().reject(p, 0.1), [False, True, False, False])


def test_multistart_chains_at_split_level():
    proc = MultiStartFixedSequence(n_starts=2)  # starts at 0 and G−1 = 5, each at δ/2 = 0.025
    assert list(proc.starts(6)) == [0, 5]
    p = np.array([0.5, 0.01, 0.01, 0.01, 0.01, 0.01])
    # chain 0 fails at once; chain at 5 rejects 5 only (nothing after it)
    np.testing.assert_array_equal(proc.reject(p, 0.05), [False] * 5 + [True])
    p = np.array([0.01, 0.03, 0.001, 0.001, 0.001, 0.001])
    np.testing.assert_array_equal(proc.reject(p, 0.05), [True, False, False, False, False, True])


def test_vectorised_over_splits_equals_per_column():
    rng = np.random.default_rng(0)
    p = rng.random((12, 50)) ** 3
    for proc in PROCEDURES:
        both = proc.reject(p, 0.1)
        for s in range(50):
            np.testing.assert_array_equal(both[:, s], proc.reject(p[:, s], 0.1))


def test_make_fwer_rejects_unknown_name():
    with pytest.raises(ValueError, match="allowed: fixed_sequence"):
        make_fwer("bonferonni")
    with pytest.raises(ValueError, match="delta"):
        FixedSequence().reject(np.array([0.1]), 1.5)


def test_splits_are_disjoint_sized_and_reproducible():
    a = draw_splits(100, 60, 30, 20, seed=3)
    b = draw_splits(100, 60, 30, 20, seed=3)
    c = draw_splits(100, 60, 30, 20, seed=4)
    np.testing.assert_array_equal(a.cal_mask, b.cal_mask)
    np.testing.assert_array_equal(a.test_mask, b.test_mask)
    assert not np.array_equal(a.cal_mask, c.cal_mask)
    assert not (a.cal_mask & a.test_mask).any()
    assert (a.cal_mask.sum(1) == 60).all() and (a.test_mask.sum(1) == 30).all()
    order = a.cal_order(slice(2, 5))
    for row, s in enumerate(range(2, 5)):
        np.testing.assert_array_equal(np.sort(order[row]), a.cal_indices(s))
    np.testing.assert_array_equal(a.cal_order(slice(3, 4))[0], order[1])  # chunking-independent
    full = draw_splits(100, 70, 30, 5, seed=0)
    assert (full.cal_mask ^ full.test_mask).all()


def test_splits_uniform_membership():
    # Each point is in the test set with probability n_test/N: over S splits the count is
    # Binomial(S, 0.3); with S = 4000, 5 standard errors = 5·sqrt(0.21/4000) ≈ 0.036.
    sp = draw_splits(20, 8, 6, 4000, seed=1)
    np.testing.assert_allclose(sp.test_mask.mean(0), 0.3, atol=0.036)
    np.testing.assert_allclose(sp.cal_mask.mean(0), 0.4, atol=5 * np.sqrt(0.24 / 4000))


def test_draw_splits_rejects_oversized_request():
    with pytest.raises(ValueError, match="exceeds the pool size 100"):
        draw_splits(100, 90, 20, 5, seed=0)


@pytest.mark.parametrize("bound", ["binomial", "hb", "hoeffding", "bentkus", "wsr"])
@pytest.mark.parametrize("fwer", ["fixed_sequence", "holm"])
def test_validate_splits_agrees_with_per_split_calibrate(bound, fwer):
    rng = np.random.default_rng(1)
    g, n_pool = 15, 400
    r = np.linspace(0, 0.4, g)
    u = rng.random(n_pool)
    losses = (u[None, :] < r[:, None]).astype(float)  # nested, increasing risk
    sp = draw_splits(n_pool, 300, 100, 8, seed=2)
    val = validate_splits(losses, sp, alpha=0.15, delta=0.1, bound=bound, fwer=fwer)
    order = sp.cal_order()
    for s in range(8):
        cal = losses[:, order[s]]  # WSR: same random order as the vectorised path
        res = calibrate(cal, alpha=0.15, delta=0.1, bound=bound, fwer=fwer, order_seed=None)
        assert res.lambda_index == val.lambda_index[s]
        if res.certified:
            assert res.risk[res.lambda_index] == pytest.approx(val.cal_risk[s])
            test = losses[res.lambda_index, sp.test_indices(s)].mean()
            assert test == pytest.approx(val.test_risk[s])
            assert val.violated[s] == (test > 0.15)


def test_uncertified_splits_make_no_claim():
    losses = np.ones((5, 50))
    sp = draw_splits(50, 30, 20, 4, seed=0)
    val = validate_splits(losses, sp, alpha=0.1, delta=0.1, bound="binomial")
    assert not val.certified.any()
    assert (val.lambda_index == NOT_CERTIFIED).all()
    assert np.isnan(val.test_risk).all() and not val.violated.any()
    assert val.coverage == 1.0


@pytest.mark.parametrize(
    "table,match",
    [
        (np.array([[0.1, np.nan]]), "NaN"),
        (np.array([[0.1, 1.2]]), r"\[0, 1\]"),
        (np.array([-0.1, 0.2]), "shape"),
    ],
)
def test_bad_loss_tables_raise(table, match):
    with pytest.raises(ValueError, match=match):
        calibrate(table, alpha=0.1, delta=0.1, bound="hb")


def test_binomial_refuses_non_binary_table():
    with pytest.raises(ValueError, match="binary"):
        calibrate(np.full((3, 10), 0.5), alpha=0.1, delta=0.1, bound="binomial")


def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))
    lo, hi = clopper_pearson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10))
    lo, hi = clopper_pearson(50, 100)
    assert lo == pytest.approx(0.3983, abs=1e-4) and hi == pytest.approx(0.6017, abs=1e-4)
