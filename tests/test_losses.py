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


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_registered_loss_keeps_its_stated_facts(name):
    # The registry's facts are what the bounds, the config check and the verifier rely on:
    # values in [0, 1] with one per sample; binary → values in {0, 1}; reads_dense=False → the
    # dense output is never read; labeled=False → the target is never read.
    spec = LOSSES[name]
    g = torch.Generator().manual_seed(0)
    if spec.task == "pitch":  # CREPE's 360 bin activations; targets in cents, NaN = unvoiced
        dense, pruned = torch.rand(6, 360, generator=g), torch.rand(6, 360, generator=g)
        target = torch.tensor([2000.0, 5000.0, float("nan"), 6000.0, 3000.0, 4000.0])
    elif spec.task == "segmentation":
        dense, pruned = torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 1, 8, 8, generator=g)
        target = (torch.rand(6, 1, 8, 8, generator=g) > 0.5).float()
    else:
        dense, pruned = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
        target = torch.randint(0, 4, (6,), generator=g)
    loss = make_loss(name)
    values = loss(dense, pruned, target)
    assert values.shape == (6,) and bool(((values >= 0) & (values <= 1)).all())
    if spec.binary:
        assert set(values.tolist()) <= {0.0, 1.0}
    if not spec.reads_dense:
        assert torch.equal(loss(torch.full_like(dense, float("nan")), pruned, target), values)
    if not spec.labeled:
        assert torch.equal(loss(dense, pruned, None), values)
