"""Loss definitions on hand-made outputs (method.md §7)."""

import pytest
import torch

from confprune.losses import LOSSES, make_loss

DENSE = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0], [1.0, 0.9, 0.0]])
PRUNED = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 0.1, 0.0]])
TARGET = torch.tensor([0, 0, 1, 1])


def test_label_01():
    assert make_loss("label_01")(DENSE, PRUNED, TARGET).tolist() == [0, 0, 1, 0]


def test_disagreement_needs_no_labels():
    loss = make_loss("disagreement")
    assert loss(DENSE, PRUNED, TARGET).tolist() == [0, 1, 0, 1]
    assert loss(DENSE, PRUNED, torch.full((4,), -1)).tolist() == [0, 1, 0, 1]
    assert not LOSSES["disagreement"].labeled


def test_selective_abstains_below_tau_and_reports_abstention():
    loss = make_loss("selective", tau=0.9)
    # softmax max of [5,0,0] ≈ 0.987 ≥ 0.9 (answers); of [0,0.1,0] ≈ 0.356 < 0.9 (abstains)
    assert loss(DENSE, PRUNED, TARGET).tolist() == [0, 0, 1, 0]
    assert loss.aux(DENSE, PRUNED, TARGET)["abstention"].tolist() == [0, 0, 0, 1]
    # with τ tiny nobody abstains and the loss equals label_01
    assert make_loss("selective", tau=1e-3)(DENSE, PRUNED, TARGET).tolist() == [0, 0, 1, 0]


def test_tv_distance_in_unit_interval_and_zero_when_identical():
    loss = make_loss("tv_distance")
    v = loss(DENSE, PRUNED, TARGET)
    assert v[0] == 0 and v[2] == 0
    assert torch.all((v >= 0) & (v <= 1))
    p, q = torch.softmax(DENSE[1], 0), torch.softmax(PRUNED[1], 0)
    assert v[1].item() == pytest.approx(0.5 * (p - q).abs().sum().item(), rel=1e-6)
    assert not LOSSES["tv_distance"].binary


def test_unknown_loss():
    with pytest.raises(ValueError, match="allowed: label_01"):
        make_loss("label01")
