"""Channel (structured) pruning family: physical == masked, nestedness, coupling, determinism.

Tolerances. The physical/masked comparison runs in float64: both models add the same nonzero
terms, only in a different order, so their outputs differ by at most ~K·u·Σ|terms| per layer
(u = 2^-53 ≈ 1.1e-16, fan-in K ≤ 1568 here: ≈ 2e-13 relative), compounded over ≤ 20 layers; we
allow 1e-9 × (1 + max|output|), four orders above that and six below the O(0.1) change that any
mistake in the coupling causes (the negative control checks the tolerance can fail). In float32
(u ≈ 6e-8) the same bound is K·u ≈ 1e-4 relative, used for the logits; argmax must agree on every
sample whose top-2 gap exceeds twice that.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from torch.func import functional_call

from confprune.models import MnistCNN, MnistMLP, UNet
from confprune.pruning.structured import ChannelFamily

LAMBDAS = (0.0, 0.25, 0.5, 0.9)
F64_RTOL = 1e-9
F32_RTOL = 1e-4


class ResidualNet(nn.Module):
    """stem → [conv-BN-ReLU-conv-BN] + identity → ReLU → global pool → fc: an addition couples the
    stem's and the block's second conv's output channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(16)
        self.c1 = nn.Conv2d(16, 16, 3, padding=1)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.b2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        return self.fc(x.mean((2, 3)))


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (defaults would hide BN mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


def make(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name == "cnn":
        return MnistCNN().eval(), torch.randn(16, 1, 28, 28)
    if name == "mlp":
        return MnistMLP().eval(), torch.randn(16, 1, 28, 28)
    if name == "unet":
        return _randomise_bn(UNet(), 1), torch.randn(2, 3, 32, 32)
    if name == "unet_w8":
        return _randomise_bn(UNet(width=8, depth=3), 1), torch.randn(2, 3, 32, 32)
    if name == "residual":
        return _randomise_bn(ResidualNet(), 1), torch.randn(4, 3, 12, 12)
    raise KeyError(name)


MODELS = ("cnn", "mlp", "unet", "unet_w8", "residual")


@pytest.fixture(scope="module", params=MODELS)
def built(request):
    model, x = make(request.param)
    return request.param, model, x, ChannelFamily(model, x[:1])


def _double(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double().eval()


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / (1.0 + float(a.abs().max()))


def test_physical_equals_masked_float64(built):
    _, model, x, fam = built
    model64, x64 = _double(model), x.double()
    with torch.no_grad():
        for lam in LAMBDAS:
            masked = functional_call(model64, fam.masked_state(model64, lam), (x64,))
            physical = fam.pruned_model(model64, lam)(x64)
            assert masked.shape == physical.shape
            assert _max_rel_diff(masked, physical) <= F64_RTOL, lam


@pytest.mark.parametrize("name", ["cnn", "mlp", "residual"])
def test_physical_equals_masked_float32_logits_and_argmax(name):
    model, x = make(name)
    fam = ChannelFamily(model, x[:1])
    with torch.no_grad():
        for lam in LAMBDAS:
            masked = functional_call(model, fam.masked_state(model, lam), (x,))
            physical = fam.pruned_model(model, lam)(x)
            tol = F32_RTOL * (1.0 + float(masked.abs().max()))
            assert float((masked - physical).abs().max()) <= tol, lam
            top2 = masked.topk(2, dim=1).values
            clear = (top2[:, 0] - top2[:, 1]) > 2 * tol
            assert torch.equal(masked.argmax(1)[clear], physical.argmax(1)[clear])


def test_negative_control_the_comparison_can_fail(built):
    """A model pruned at another λ must violate the tolerance: the check is not vacuous."""
    _, model, x, fam = built
    model64, x64 = _double(model), x.double()
    with torch.no_grad():
        masked = functional_call(model64, fam.masked_state(model64, 0.5), (x64,))
        physical = fam.pruned_model(model64, 0.25)(x64)
    assert _max_rel_diff(masked, physical) > 1e3 * F64_RTOL


def test_lambda_zero_is_the_dense_model(built):
    _, model, x, fam = built
    pruned = fam.pruned_model(model, 0.0).state_dict()
    masked = fam.masked_state(model, 0.0)
    dense_state = model.state_dict()
    assert pruned.keys() == dense_state.keys() == masked.keys()
    assert all(torch.equal(pruned[k], v) and torch.equal(masked[k], v) for k, v in dense_state.items())
    assert fam.sparsity(0.0) == 0.0 and fam.unit_sparsity(0.0) == 0.0


def test_model_untouched_and_parameter_counts(built):
    _, model, _, fam = built
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dense = sum(p.numel() for p in model.parameters())
    assert fam.pool_size == dense
    prev = 0
    for lam in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99):
        pruned = fam.pruned_model(model, lam)
        n = sum(p.numel() for p in pruned.parameters())
        assert dense - n == round(fam.sparsity(lam) * dense)  # sparsity is exact
        masks = fam.masks(lam)  # and agrees with the masks' zeros
        assert dense - n == sum(int((~m).sum()) for m in masks.values())
        assert n <= dense if lam == 0 else n < dense
        assert fam.sparsity(lam) >= prev
        prev = fam.sparsity(lam)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_mnist_cnn_parameter_formula():
    model, x = make("cnn")
    fam = ChannelFamily(model, x[:1])
    for lam in (0.25, 0.5, 0.75):
        kept = fam.kept_units(lam)
        c1, c2, h = kept["features.0"], kept["features.3"], kept["classifier.1"]
        expected = (9 * c1 + c1) + (9 * c1 * c2 + c2) + (49 * c2 * h + h) + (10 * h + 10)
        assert sum(p.numel() for p in fam.pruned_model(model, lam).parameters()) == expected


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_nested_counts_and_never_empty(scope):
    model, x = make("unet_w8")
    fam = ChannelFamily(model, x[:1], scope=scope)
    U, G = fam.n_units, len(fam.groups)
    prev = None
    for lam in [i / 25 for i in range(25)]:
        keep = torch.cat([m.reshape(-1) for m in fam.masks(lam).values()])
        if prev is not None:
            assert torch.all(keep <= prev)  # a removed entry never comes back
        prev = keep
        kept = fam.kept_units(lam)
        assert min(kept.values()) >= 1
        removed = sum(g.units for g in fam.groups) - sum(kept[g.name] for g in fam.groups)
        if scope == "global":
            assert removed == min(round(lam * U), U - G)
        else:
            assert removed == sum(min(round(lam * g.units), g.units - 1) for g in fam.groups)
        assert fam.unit_sparsity(lam) == removed / U


def test_output_layers_are_protected():
    for name, out_layer in (("cnn", "classifier.4"), ("mlp", "net.6"), ("unet_w8", "head"), ("residual", "fc")):
        model, x = make(name)
        fam = ChannelFamily(model, x[:1])
        assert out_layer not in fam.kept_units(0.5)
        assert [p["name"] for p in fam.description()["protected"]] == [out_layer]
        with torch.no_grad():
            assert fam.pruned_model(model, 0.95)(x).shape == model(x).shape


def test_unet_skip_and_transpose_shapes():
    model, x = make("unet_w8")
    fam = ChannelFamily(model, x[:1])
    groups = {g.name: g for g in fam.groups}
    # the encoder's last conv feeds the pool path and the decoder concatenation (offset by up's width)
    skip = groups["down.0.3"]
    roles = {(m.module, m.role) for m in skip.members}
    assert {("down.0.3", "producer"), ("down.0.4", "norm"), ("down.1.0", "consumer"), ("dec.2.0", "consumer")} <= roles
    dec_cols = next(m for m in skip.members if m.module == "dec.2.0").index
    assert dec_cols == tuple((8 + u,) for u in range(8))  # cat([up(x), skip]): skip columns after up's
    for lam in (0.3, 0.6, 0.9):
        pruned = fam.pruned_model(model, lam)
        mods = dict(pruned.named_modules())
        kept = fam.kept_units(lam)
        for i in range(3):
            level = 2 - i  # dec.i consumes up.i and the skip of down.(depth-1-i)
            assert mods[f"up.{i}"].out_channels == kept[f"up.{i}"]
            assert mods[f"dec.{i}.0"].in_channels == kept[f"up.{i}"] + kept[f"down.{level}.3"]
            assert mods[f"dec.{i}.1"].num_features == kept[f"dec.{i}.0"]
        with torch.no_grad():
            assert pruned(x).shape == model(x).shape


def test_residual_units_pruned_together():
    model, x = make("residual")
    fam = ChannelFamily(model, x[:1])
    coupled = next(g for g in fam.groups if "stem" in g.producers)
    assert set(coupled.producers) == {"stem", "c2"}
    for lam in (0.2, 0.5, 0.9):
        kept = fam.kept_units(lam)
        assert kept["stem"] == kept["c2"]
        masks = fam.masks(lam)
        assert torch.equal(masks["stem.bias"], masks["c2.bias"])
        assert torch.equal(masks["stem.bias"], masks["bn0.weight"]) and torch.equal(masks["stem.bias"], masks["b2.weight"])
        assert torch.equal(masks["fc.weight"][0], masks["stem.bias"])  # consumer columns


def test_determinism_across_independent_rebuilds():
    for name, criterion in (("unet_w8", "l1"), ("unet_w8", "activation"), ("cnn", "random")):
        fams, models = [], []
        for _ in range(2):
            model, x = make(name)
            score = torch.randn(8, *x.shape[1:], generator=torch.Generator().manual_seed(5))
            fams.append(ChannelFamily(model, x[:1], criterion=criterion, seed=3, score_inputs=score))
            models.append(model)
        assert fams[0].description() == fams[1].description()
        a, b = (f.pruned_model(m, 0.6).state_dict() for f, m in zip(fams, models, strict=True))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_random_seed_changes_the_order():
    model, x = make("cnn")
    d0 = ChannelFamily(model, x[:1], criterion="random", seed=0).description()
    d1 = ChannelFamily(model, x[:1], criterion="random", seed=1).description()
    assert d0["removal_order_sha256"] != d1["removal_order_sha256"]


def _known_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Linear(4→8)-ReLU-Linear(8→2) with hidden rows [a_u, b_u, 0, 0]: a_u = 9 − r_u, b_u = 10·r_u
    for a permutation r of 1..8. L1 norms 9·r_u + 9 rank units by r; on inputs e₀ the outputs
    are a_u, which rank them in the reverse order. Returns (net, l1_order, activation_order)."""
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    r = torch.tensor([5, 2, 7, 0, 3, 6, 1, 4], dtype=torch.float32) + 1.0
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[:, 0] = 9.0 - r
        net[0].weight[:, 1] = 10.0 * r
        net[0].bias.zero_()
    return net, torch.argsort(r), torch.argsort(-r)


def _removed_units(fam: ChannelFamily, lam: float) -> set[int]:
    return set(torch.nonzero(~fam.masks(lam)["0.bias"]).flatten().tolist())


def test_known_truth_l1_and_activation_rankings():
    net, l1_order, act_order = _known_mlp()
    x = torch.randn(1, 4)
    fam = ChannelFamily(net, x)
    score = torch.zeros(32, 4)
    score[:, 0] = 1.0  # training inputs e₀: unit u outputs a_u
    act = ChannelFamily(net, x, criterion="activation", score_inputs=score)
    assert fam.n_units == act.n_units == 8
    for k in range(1, 8):  # global scope with one group: exactly the k least important units
        assert _removed_units(fam, k / 8) == set(l1_order[:k].tolist())
        assert _removed_units(act, k / 8) == set(act_order[:k].tolist())
    # negative control: the two criteria disagree, so neither check passes by accident
    assert _removed_units(fam, 4 / 8) != _removed_units(act, 4 / 8)


def test_global_scope_is_invariant_to_rescaling_a_layer():
    model, x = make("cnn")
    ref = ChannelFamily(model, x[:1]).description()["removal_order_sha256"]
    with torch.no_grad():
        model.features[0].weight.mul_(100.0)
    assert ChannelFamily(model, x[:1]).description()["removal_order_sha256"] == ref


def test_rejects_missing_score_inputs_unknown_options_and_wrong_models():
    model, x = make("cnn")
    with pytest.raises(ValueError, match="score_inputs"):
        ChannelFamily(model, x[:1], criterion="activation")
    with pytest.raises(ValueError, match="criterion"):
        ChannelFamily(model, x[:1], criterion="magnitude")
    with pytest.raises(ValueError, match="scope"):
        ChannelFamily(model, x[:1], scope="local")
    fam = ChannelFamily(model, x[:1])
    with pytest.raises(ValueError, match="architecture"):
        fam.pruned_model(MnistCNN(channels=(8, 32)), 0.5)
    with pytest.raises(ValueError, match="λ"):
        fam.kept_units(1.0)


class ChannelMixer(nn.Module):
    """Subtracts the mean over channels: removing a channel changes every other channel's value,
    which no mask over the dense model reproduces."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c(x)
        h = h - h.mean(1, keepdim=True)
        return self.fc(self.c2(h).mean((2, 3)))


def test_channel_mixing_model_is_refused_unless_protected():
    torch.manual_seed(0)
    net, x = ChannelMixer().eval(), torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match="mixes channels"):
        ChannelFamily(net, x)
    fam = ChannelFamily(net, x, protected_layers=["c"])
    assert [g.name for g in fam.groups] == ["c2"]


def test_description_is_json_and_complete():
    model, x = make("unet_w8")
    d = ChannelFamily(model, x[:1], scope="layerwise").description()
    assert json.loads(json.dumps(d)) == d
    assert d["structure"] == "channel" and d["scope"] == "layerwise" and d["criterion"] == "l1"
    assert d["n_units"] == sum(g["units"] for g in d["groups"])
    assert len(d["groups"]) == 17  # 2·3 encoder + 2 bottleneck + 3 transposed + 2·3 decoder convs; head protected


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_round_to_keeps_kernel_friendly_counts_and_stays_nested(scope):
    """Issue 22's kernel-friendly channel counts: with round_to = 8 every layer keeps a multiple
    of 8 units (or all of them) at every λ, the removed sets stay nested in λ (fixed-sequence
    testing's premise) and the physical export has exactly those widths, equal to the masked
    model. Negative control: without rounding some λ keeps a count that is not a multiple of 8."""
    torch.manual_seed(0)
    model = MnistCNN(channels=(16, 32), hidden=128).eval()
    x = torch.randn(4, 1, 28, 28)
    plain = ChannelFamily(model, x[:2], scope=scope)
    rounded = ChannelFamily(model, x[:2], scope=scope, round_to=8)
    grid = [i / 50 for i in range(50)]
    assert any(k % 8 for lam in grid for k in plain.kept_units(lam).values())
    before = None
    for lam in grid:
        kept = rounded.kept_units(lam)
        assert all(k % 8 == 0 for k in kept.values()), (lam, kept)
        removed = [set(r) for r in rounded._removed(lam)]
        if before is not None:
            assert all(b <= r for b, r in zip(before, removed, strict=True)), lam
        before = removed
        assert rounded.sparsity(lam) <= plain.sparsity(lam) + 1e-12  # rounding up keeps more
    net = rounded.exported_module(model, 0.6)
    assert net.features[0].out_channels == rounded.kept_units(0.6)["features.0"]
    masked = rounded.pruned_model(model, 0.6, copy.deepcopy(model))
    with torch.no_grad():
        torch.testing.assert_close(net(x), masked(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="round_to"):
        ChannelFamily(model, x[:2], round_to=0)


def test_round_to_travels_through_the_spec_and_a_certificate_verifies():
    from confprune.api import certify_from_table
    from confprune.losses import make_loss
    from confprune.pruning import FamilySpec
    from confprune.sweep import compute_loss_table
    from confprune.verify import ISSUER, verify_certificate

    torch.manual_seed(0)
    model = MnistCNN(channels=(16, 32), hidden=32).eval()
    x = torch.randn(600, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    family = FamilySpec.from_config({"criterion": "l1", "structure": "channel", "round_to": 8}).build(
        model, example_inputs=x[:2])
    assert family.config["round_to"] == 8
    table = compute_loss_table(model, family, [0.0, 0.1, 0.2, 0.3], (x, y), make_loss("disagreement"),
                               batch_size=200, progress=False)
    res = certify_from_table(model, family, table, make_loss("disagreement"), alpha=0.3, delta=0.2)
    report = verify_certificate(res.certificate, res.pruned_state, model, (x, y))
    assert report.ok, str(report)  # verify rebuilt the rounded family from the recorded options
    assert report.status == ISSUER  # the caller's own points (an issuer-chosen set), said as such
    assert res.certificate["pruning"]["config"]["round_to"] == 8


@pytest.mark.parametrize("options,key", [({"round_to": 0}, "pruning.round_to"), ({"round_to": 2.5}, "pruning.round_to"),
                                         ({"protected_layers": "conv6"}, "pruning.protected_layers")])
def test_channel_options_are_checked_at_the_door(options, key):
    from confprune.errors import ConfigError
    from confprune.pruning import check_pruning_options

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_pruning_options({"structure": "channel", "criterion": "l1", **options})
