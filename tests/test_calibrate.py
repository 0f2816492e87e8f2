"""Calibration stage: deployment split, early-stop rule, certification on a known table."""

import numpy as np
import pytest

from confprune.calibrate import FixedSequenceStop, deployment_indices
from confprune.stats import calibrate, draw_splits, validate_splits


def nested_table(g=30, n=3000, seed=0):
    r = np.linspace(0.0, 0.4, g)
    u = np.random.default_rng(seed).random(n)
    return (u[None] < r[:, None]).astype(np.float32), r


def test_deployment_indices_reproducible_and_distinct_from_splits():
    a, b = deployment_indices(1000, 600, 3), deployment_indices(1000, 600, 3)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 600
    sp = draw_splits(1000, 600, 400, 1, seed=3)
    assert not np.array_equal(np.sort(a), sp.cal_indices(0))
    with pytest.raises(ValueError):
        deployment_indices(10, 11, 0)


@pytest.mark.parametrize("bound", ["binomial", "hb", "wsr"])
def test_early_stop_truncation_changes_nothing(bound):
    losses, r = nested_table()
    sp = draw_splits(3000, 2000, 1000, 50, seed=1)
    dep = deployment_indices(3000, 2000, 1)
    stop = FixedSequenceStop(sp, dep, alpha=0.1, delta=0.1, bound=bound)
    rows = 0
    for j in range(losses.shape[0]):
        rows = j + 1
        if stop(j, losses[j]):
            break
    assert rows < losses.shape[0]  # stopped mid-grid
    full = validate_splits(losses, sp, alpha=0.1, delta=0.1, bound=bound)
    cut = validate_splits(losses[:rows], sp, alpha=0.1, delta=0.1, bound=bound)
    np.testing.assert_array_equal(full.lambda_index, cut.lambda_index)
    np.testing.assert_array_equal(full.test_risk, cut.test_risk)
    a = calibrate(losses[:, dep], alpha=0.1, delta=0.1, bound=bound, order_seed=None)
    b = calibrate(losses[:rows][:, dep], alpha=0.1, delta=0.1, bound=bound, order_seed=None)
    assert a.lambda_index == b.lambda_index


def test_certification_reports_nothing_certified_explicitly():
    from torch import nn

    from confprune.api import certify_from_table
    from confprune.losses import make_loss
    from confprune.pruning import build_family
    from confprune.sweep import LossTable

    model = nn.Linear(3, 2)
    grid = np.linspace(0, 0.4, 5)
    table = LossTable(grid=grid, losses=np.ones((5, 100), dtype=np.float32), sparsity=grid)
    res = certify_from_table(model, build_family(model), table, make_loss("label_01"), alpha=0.1, delta=0.1,
                             bound="binomial", calibration_indices=np.arange(80))
    assert not res.certified and res.lambda_hat is None and res.sparsity is None and res.cal_risk is None
    assert res.pruned_model is None and res.certificate["certified"] is False
