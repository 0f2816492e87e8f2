"""Pruning engine: nested exact masks, pool options, torch.nn.utils.prune compatibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from confprune.pruning import PruningFamily, build_family, prunable_parameters


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def test_pool_options():
    net = small_net()
    assert set(prunable_parameters(net)) == {"0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"}
    assert set(prunable_parameters(net, include_bias=False)) == {"0.weight", "1.weight", "4.weight"}
    assert set(prunable_parameters(net, include_norm=False)) == {"0.weight", "0.bias", "4.weight", "4.bias"}


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_masks_nested_exact_and_dense_untouched(scope):
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fam = build_family(net, scope=scope)
    grid = np.linspace(0, 0.95, 20)
    prev = None
    for lam in grid:
        masks = fam.masks(float(lam))
        kept = torch.cat([m.reshape(-1) for m in masks.values()])
        assert (~kept).sum().item() == sum(fam.pruned_per_group(float(lam)))
        assert fam.sparsity(float(lam)) == pytest.approx((~kept).float().mean().item())
        if prev is not None:
            assert torch.all(kept <= prev)  # nested: once pruned, stays pruned
        prev = kept
    assert fam.sparsity(0.0) == 0.0
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_global_magnitude_prunes_smallest_and_apply_zeroes_exactly():
    net = small_net()
    fam = build_family(net)
    params = dict(net.named_parameters())
    pruned = fam.apply(params, 0.5)
    all_w = torch.cat([p.detach().abs().reshape(-1) for p in params.values()])
    kept_w = torch.cat([(p != 0).reshape(-1) for p in pruned.values()])
    threshold = all_w.sort().values[fam.pruned_per_group(0.5)[0]]
    assert torch.all(all_w[kept_w] >= threshold)
    assert torch.all(all_w[~kept_w] <= threshold)
    for name, p in pruned.items():
        keep = fam.masks(0.5)[name]
        assert torch.equal(p[keep], params[name].detach()[keep])
        assert torch.all(p[~keep] == 0) and not torch.any(torch.signbit(p[~keep]))


def test_layerwise_prunes_each_tensor_at_the_same_ratio():
    fam = build_family(small_net(), scope="layerwise")
    for name, keep in fam.masks(0.3).items():
        assert (~keep).sum().item() == round(0.3 * keep.numel()), name


@pytest.mark.parametrize("lam", [0.1, 0.37, 0.5, 0.9])
def test_same_weights_as_torch_global_unstructured(lam):
    net = small_net()
    ours = build_family(net).masks(lam)
    ref = small_net()
    pool = [(m, n) for m in ref.modules() for n, _ in list(m.named_parameters(recurse=False))]
    prune.global_unstructured(pool, pruning_method=prune.L1Unstructured, amount=lam)
    ref_masks: dict[str, torch.Tensor] = {}
    for mod_name, m in ref.named_modules():
        for buf_name, buf in m.named_buffers(recurse=False):
            if buf_name.endswith("_mask"):
                ref_masks[f"{mod_name}.{buf_name[:-5]}"] = buf.bool()
    assert set(ref_masks) == set(ours)
    # Weights are continuous random values: no ties, so the kept sets must be identical.
    for name in ours:
        assert torch.equal(ours[name], ref_masks[name]), name


def test_ranking_beyond_torch_quantile_limit():
    # torch.quantile refuses inputs above 2^24 elements; ranking by a sort has no such limit.
    big = {"w": torch.randn(2**24 + 7, generator=torch.Generator().manual_seed(0))}
    fam = PruningFamily.from_scores({"w": big["w"].abs()})
    assert fam.pool_size == 2**24 + 7
    assert fam.pruned_per_group(0.25)[0] == round(0.25 * (2**24 + 7))
    keep = fam.masks(0.25)["w"]
    assert big["w"].abs()[~keep].max() <= big["w"].abs()[keep].min()


def test_random_criterion_is_seeded():
    a = build_family(small_net(), criterion="random", seed=3).masks(0.5)
    b = build_family(small_net(), criterion="random", seed=3).masks(0.5)
    c = build_family(small_net(), criterion="random", seed=4).masks(0.5)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bad_inputs():
    with pytest.raises(ValueError, match="allowed: magnitude"):
        build_family(small_net(), criterion="magnitud")
    with pytest.raises(ValueError, match="scope"):
        build_family(small_net(), scope="per-channel")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        build_family(small_net()).masks(1.0)
