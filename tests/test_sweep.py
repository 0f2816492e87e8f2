"""The λ sweep's hot loop: streaming data, early-stop chunking, the checks on every loss row."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from confprune.losses import Loss, make_loss
from confprune.pruning import build_family
from confprune.sweep import compute_loss_table

GRID = np.round(np.linspace(0.0, 0.9, 10), 10)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    x = torch.randn(300, 8)
    y = model(x).argmax(1)
    y[::7] = (y[::7] + 1) % 3  # some dense errors
    return model, build_family(model), x, y


def test_streaming_dataloader_equals_in_memory_tensors(setup):
    model, family, x, y = setup
    loss = make_loss("label_01")
    ref = compute_loss_table(model, family, GRID, (x, y), loss, batch_size=64, progress=False)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=False)
    streamed = compute_loss_table(model, family, GRID, loader, loss, batch_size=64, progress=False)
    np.testing.assert_array_equal(streamed.losses, ref.losses)  # bit for bit
    np.testing.assert_array_equal(streamed.sparsity, ref.sparsity)
    assert streamed.data_fingerprint == ref.data_fingerprint
    # The fingerprint does not depend on how the data is batched.
    other = compute_loss_table(model, family, GRID, DataLoader(TensorDataset(x, y), batch_size=50), loss,
                               batch_size=50, progress=False)
    assert other.data_fingerprint == ref.data_fingerprint


def test_rows_are_the_family_at_each_lambda(setup):
    model, family, x, y = setup
    table = compute_loss_table(model, family, GRID, (x, y), make_loss("label_01"), batch_size=100, progress=False)
    assert table.losses.shape == (GRID.size, x.shape[0]) and table.complete
    np.testing.assert_array_equal(table.sparsity, [family.sparsity(float(lam)) for lam in GRID])
    for j in (0, 5, 9):  # each row is the pruned model's 0-1 loss at that λ, computed directly
        weights = {**dict(model.named_parameters()), **family.apply(dict(model.named_parameters()), float(GRID[j]))}
        out = torch.func.functional_call(model, {k: v.detach() for k, v in weights.items()}, (x,))
        np.testing.assert_array_equal(table.losses[j], (out.argmax(1) != y).float().numpy())


@pytest.mark.parametrize("chunk", [1, 3, 10])
def test_early_stop_keeps_the_prefix_exactly(setup, chunk):
    model, family, x, y = setup
    loss = make_loss("label_01")
    full = compute_loss_table(model, family, GRID, (x, y), loss, batch_size=64, progress=False)
    seen: list[int] = []

    def stop(j: int, row: np.ndarray) -> bool:
        seen.append(j)
        return j == 4

    cut = compute_loss_table(model, family, GRID, (x, y), loss, batch_size=64, stop=stop, lambda_chunk=chunk,
                             progress=False)
    assert seen == [0, 1, 2, 3, 4]  # called once per row, in order, until it says stop
    assert cut.losses.shape[0] == 5 and not cut.complete
    np.testing.assert_array_equal(cut.losses, full.losses[:5])
    np.testing.assert_array_equal(cut.lambdas, GRID[:5])
    assert cut.data_fingerprint == full.data_fingerprint


def test_a_loss_outside_the_unit_interval_is_refused_naming_lambda(setup):
    model, family, x, y = setup
    bad = Loss("doubled", lambda d, p, t: 2.0 * (p.argmax(1) != t).float(), binary=False, labeled=True)
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*λ=0"):
        compute_loss_table(model, family, GRID, (x, y), bad, progress=False)
    nan = Loss("nan", lambda d, p, t: torch.full((p.shape[0],), float("nan")), binary=False, labeled=False)
    with pytest.raises(ValueError, match="non-finite"):
        compute_loss_table(model, family, GRID, (x, y), nan, progress=False)


def test_a_loss_of_the_wrong_shape_or_without_targets_is_refused(setup):
    model, family, x, y = setup
    scalar = Loss("mean", lambda d, p, t: (p.argmax(1) != t).float().mean(), binary=False, labeled=True)
    with pytest.raises(ValueError, match="one value per sample"):
        compute_loss_table(model, family, GRID, (x, y), scalar, progress=False)
    with pytest.raises(ValueError, match="needs targets"):
        compute_loss_table(model, family, GRID, x, make_loss("label_01"), progress=False)


def test_aux_statistics_are_pool_means(setup):
    model, family, x, y = setup
    table = compute_loss_table(model, family, GRID[:3], (x, y), make_loss("selective", tau=0.6), batch_size=64,
                               progress=False)
    out = model(x).detach()
    abstained = (torch.softmax(out, 1).amax(1) < 0.6).float().mean().item()
    assert table.aux["abstention"][0] == pytest.approx(abstained, abs=1e-12)


def reference_table(model, family, grid, x, y, loss, batch_size):
    """The sweep as it was first written (a functional call per batch with the pruned weights in
    channels_last), kept here as the independent reference the loop orders must reproduce."""
    from torch.func import functional_call

    from confprune.forward import fast_layout

    state = {**{k: v.detach() for k, v in model.named_parameters()}, **{k: v.detach() for k, v in model.named_buffers()}}
    params = {k: state[k] for k in family.parameter_names}
    rows = []
    with torch.inference_mode():
        for lam in grid:
            weights = {k: fast_layout(v) for k, v in {**state, **family.apply(params, float(lam))}.items()}
            dense_w = {k: fast_layout(v) for k, v in state.items()}
            parts = []
            for s in range(0, x.shape[0], batch_size):
                xb = fast_layout(x[s:s + batch_size])
                dense = functional_call(model, dense_w, (xb,))
                out = functional_call(model, weights, (xb,))
                parts.append(loss(dense, out, None if y is None else y[s:s + batch_size]).float())
            rows.append(torch.cat(parts).numpy())
    return np.stack(rows)


@pytest.fixture(scope="module")
def cnn_setup():
    from confprune.models import MnistCNN

    torch.manual_seed(2)
    model = MnistCNN(channels=(4, 8), hidden=16).eval()
    x = torch.randn(240, 1, 28, 28)
    y = torch.randint(0, 10, (240,))
    return model, build_family(model), x, y


def test_both_loop_orders_reproduce_the_reference_bit_for_bit(cnn_setup):
    from confprune.sweep import compute_loss_tables

    model, family, x, y = cnn_setup
    names = ["label_01", "disagreement", "selective", "tv_distance"]  # every classification loss
    losses = [make_loss(n) for n in names]
    in_memory = compute_loss_tables(model, family, GRID, (x, y), losses, batch_size=100, progress=False)
    streamed = compute_loss_tables(model, family, GRID, DataLoader(TensorDataset(x, y), batch_size=100), losses,
                                   batch_size=100, lambda_chunk=3, progress=False)
    for loss, a, b in zip(losses, in_memory, streamed, strict=True):
        ref = reference_table(model, family, GRID, x, y, loss, 100)
        np.testing.assert_array_equal(a.losses, ref, err_msg=loss.name)
        np.testing.assert_array_equal(b.losses, ref, err_msg=loss.name)


def test_segmentation_losses_reproduce_the_reference():
    from confprune.models import UNet
    from confprune.sweep import compute_loss_tables

    torch.manual_seed(3)
    model = UNet(width=4, depth=2).eval()
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():  # half the pixels positive: masks that pruning changes
        model.head.bias -= model(x).median()
        y = (model(x) > 0).float()
    family = build_family(model, include_norm=False)
    names = ["seg_fail", "seg_disagreement", "seg_miss"]
    tables = compute_loss_tables(model, family, GRID, (x, y), [make_loss(n) for n in names], batch_size=8,
                                 progress=False)
    for name, table in zip(names, tables, strict=True):
        ref = reference_table(model, family, GRID, x, y, make_loss(name), 8)
        np.testing.assert_array_equal(table.losses, ref, err_msg=name)
        assert ref[-1].mean() > 0, name  # the check is not on all-zero rows
        assert ref[0].mean() == 0 or name == "seg_miss"  # λ = 0 is the dense model


def test_several_losses_from_one_pass_equal_separate_sweeps(cnn_setup):
    from confprune.sweep import compute_loss_tables

    model, family, x, y = cnn_setup
    names = ["label_01", "disagreement", "tv_distance"]
    together = compute_loss_tables(model, family, GRID, (x, y), [make_loss(n) for n in names], batch_size=100,
                                   progress=False)
    for name, table in zip(names, together, strict=True):
        alone = compute_loss_table(model, family, GRID, (x, y), make_loss(name), batch_size=100, progress=False)
        np.testing.assert_array_equal(table.losses, alone.losses)


def test_streamed_early_stop_keeps_the_prefix_exactly(cnn_setup):
    model, family, x, y = cnn_setup
    loss = make_loss("label_01")
    full = compute_loss_table(model, family, GRID, (x, y), loss, batch_size=100, progress=False)
    loader = DataLoader(TensorDataset(x, y), batch_size=100)
    cut = compute_loss_table(model, family, GRID, loader, loss, batch_size=100, lambda_chunk=4,
                             stop=lambda j, row: j == 5, progress=False)
    np.testing.assert_array_equal(cut.losses, full.losses[:6])


def test_the_progress_bar_moves_with_every_lambda(cnn_setup, monkeypatch):
    # In memory, one update per λ row (not all at the end of one pass over the data).
    import confprune.sweep as sweep_mod

    updates: list[float] = []
    positions: list[float] = []

    class Bar:
        def __init__(self, *a, **k):
            self.n = 0

        def update(self, n):
            updates.append(n)
            self.n += n
            positions.append(self.n)

        def set_postfix(self, **k):
            pass

        def close(self):
            pass

    monkeypatch.setattr(sweep_mod, "tqdm", Bar)
    model, family, x, y = cnn_setup
    compute_loss_table(model, family, GRID, (x, y), make_loss("label_01"), batch_size=100, progress=True)
    assert updates == [1] * len(GRID)
    positions.clear()
    compute_loss_table(model, family, GRID, DataLoader(TensorDataset(x, y), batch_size=60),
                       make_loss("label_01"), batch_size=60, lambda_chunk=5, progress=True)
    # Streamed: the bar moves with every batch of every chunk and ends exactly at the total (its
    # position is set, not summed from fractions, which overshot it: 100.00000000000007/100).
    assert positions == sorted(positions) and positions[-1] == len(GRID)
    assert len(set(positions)) >= 4 * 2


def test_fast_layout_gives_channels_last_strides_even_with_a_size_one_dimension():
    """A 16×1×3×3 weight is NCHW-contiguous *and* counts as channels_last; ``contiguous(cl)`` returns
    it unchanged and the convolution then picks the NCHW kernel (2.7× slower over the MNIST CNN's
    pool). fast_layout must give the strides ``nn.Module.to(memory_format=channels_last)`` gives."""
    from confprune.forward import fast_copy, fast_layout

    w = torch.randn(16, 1, 3, 3)
    assert w.contiguous(memory_format=torch.channels_last).stride() == w.stride()  # the trap
    assert fast_layout(w).stride() == torch.nn.Conv2d(1, 16, 3).to(memory_format=torch.channels_last).weight.stride()
    assert fast_layout(w).stride() == (9, 1, 3, 1) and torch.equal(fast_layout(w), w)
    net = fast_copy(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 2, 3)))
    assert net[0].weight.stride() == (9, 1, 3, 1)


def test_tune_allocator_can_be_turned_off(monkeypatch):
    from confprune.forward import tune_allocator

    monkeypatch.setenv("CONFPRUNE_TUNE_MALLOC", "0")
    assert tune_allocator() is False
    monkeypatch.delenv("CONFPRUNE_TUNE_MALLOC")
    import ctypes.util

    assert tune_allocator() is (ctypes.util.find_library("c") is not None and _is_glibc())


def _is_glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"
