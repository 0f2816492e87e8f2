"""The pruning family as a declared interface: every registered family — each criterion, the SiPP
hybrid, every channel criterion and the int8 wrapper — implements the Family protocol, and a
FamilySpec (one ``pruning`` config, one knob) is checked the same way wherever it comes from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from confprune.errors import ConfigError
from confprune.models import MnistCNN
from confprune.pruning import (
    ALL_CRITERIA,
    CHANNEL_OPTIONS,
    Family,
    FamilySpec,
    check_family,
    quantize_linear,
)
from confprune.pruning.trajectory import WelfordTracker
from confprune.schema import check_config


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = MnistCNN(channels=(4, 8), hidden=16).eval()
    tracker = WelfordTracker(model)
    for _ in range(3):  # a trajectory for M&U: a few perturbed copies of the weights
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        tracker.update()
    return model, tracker.state(), torch.randn(64, 1, 28, 28)


SPECS = [
    *(FamilySpec(c) for c in ALL_CRITERIA if c not in ("sipp", "sipp_hybrid")),
    FamilySpec("sipp", include_bias=False, include_norm=False),
    FamilySpec("sipp_hybrid", include_bias=False, include_norm=False),
    FamilySpec("magnitude", scope="layerwise"),
    *(FamilySpec(c, "channel") for c in CHANNEL_OPTIONS),
    FamilySpec("magnitude", quantize=True),
    FamilySpec("l1", "channel", quantize=True),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
def test_every_registered_family_implements_the_protocol(cnn, spec):
    model, trajectory, x = cnn
    family = spec.build(model, trajectory=trajectory, score_inputs=x, example_inputs=x[:2])
    check_family(family)
    assert isinstance(family, Family)
    assert family.cost_kind in ("macs", "nonzero_macs") and family.sparsity_of in ("model", "pruning pool")
    assert family.sparsity(0.0) == 0.0 and 0 < family.sparsity(0.6) < 1
    lam = 0.6
    net = family.pruned_model(model, lam)
    with torch.no_grad():
        out = net(x[:4])
    assert out.shape == model(x[:4]).shape
    state = family.export_state(model, lam)
    module = family.exported_module(model, lam)
    if module is None:  # a masked state of the dense architecture: it loads into the model
        clone = MnistCNN(channels=(4, 8), hidden=16).eval()
        clone.load_state_dict(state)
        if not spec.quantize:
            with torch.no_grad():
                assert torch.allclose(clone(x[:4]), out, atol=1e-5)
    else:  # a physically smaller module: its state is the export
        assert set(state) == set(module.state_dict())
        assert sum(p.numel() for p in module.parameters()) < sum(p.numel() for p in model.parameters())
    payload, runner = family.export_payload(model, lam)
    assert payload is not None and isinstance(runner, nn.Module)
    assert isinstance(family.cost_model(model, lam), nn.Module)
    name = next(n for n in family.parameter_names if n.endswith("weight"))
    when, title = family.removal_lambda(name, np.linspace(0, 0.9, 10))
    assert when.shape == tuple(dict(model.named_parameters())[name].shape) and title
    assert all(isinstance(n, str) for n in family.figure_notes(lam))
    assert family.config["criterion"] == ("l1" if spec.criterion == "magnitude" and spec.structure == "channel"
                                          else spec.criterion) or spec.structure == "channel"


def test_an_object_missing_a_member_is_not_a_family():
    class Half:
        criterion = scope = structure = "x"

    with pytest.raises(TypeError, match="no 'config'"):
        check_family(Half())


def test_int8_outputs_do_not_depend_on_batch_mates():
    # torch's dynamic quantisation scales activations by the whole batch's range; the family's
    # int8 model quantises each sample on its own, so batch 1 and batch 500 agree exactly.
    torch.manual_seed(0)
    q = quantize_linear(nn.Sequential(nn.Linear(50, 20), nn.ReLU(), nn.Linear(20, 10)).eval())
    x = torch.randn(500, 50)
    x[0] *= 20  # one outlier in the batch
    with torch.no_grad():
        batched = q(x)[1:]
        alone = torch.cat([q(x[i:i + 1]) for i in range(1, 500)])
    assert torch.equal(batched, alone)
    # negative control: torch's plain dynamic quantisation does depend on the batch
    with pytest.warns(DeprecationWarning):  # torch's notice for the quantisation API
        plain = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(50, 20)).eval(), {nn.Linear},
                                                       dtype=torch.qint8)
    with torch.no_grad():
        assert not torch.equal(plain(x)[1:], torch.cat([plain(x[i:i + 1]) for i in range(1, 500)]))


def test_a_spec_owns_its_defaults_and_round_trips():
    spec = FamilySpec.from_config({"criterion": "mu", "eps": 1e-6})
    assert spec.include_norm and spec.include_bias and spec.options == {"eps": 1e-6}
    assert FamilySpec.from_config(spec.config) == spec
    assert FamilySpec.from_config({"criterion": "l1", "structure": "channel", "quantize": True}).label == \
        "l1/channel+int8"


@pytest.mark.parametrize("config,key", [
    ({"criterion": "nope"}, "knobs.families[1].criterion"),
    ({"criterion": "l1", "structure": "channel", "quantize": "yes"}, "knobs.families[1].quantize"),
    ({"criterion": "mu", "bogus": 1}, "knobs.families[1].bogus"),
    ({"criterion": "magnitude", "seed": -1}, "knobs.families[1].seed"),
])
def test_a_bad_knob_names_its_key(config, key):
    with pytest.raises(ConfigError) as err:
        FamilySpec.from_config(config, group="knobs.families[1]")
    assert err.value.key == key


@pytest.mark.parametrize("knob,key", [
    ("{criterion: mu}", "trainer.trajectory.enabled"),  # M&U needs the trajectory: refused before training
    ("{criterion: sipp}", "knobs.families[1].include_bias"),  # SiPP cannot score the biases of the pool
    ("{criterion: activation}", "knobs.families[1].criterion"),  # a channel criterion without structure=channel
    ("{criterion: magnitude, quantize: false}", "knobs.families"),  # the same family twice
])
def test_a_knob_fails_at_the_config_check_like_pruning(compose, knob, key):
    _, cfg = compose(["experiment=pareto_mnist",
                      f"knobs.families=[{{criterion: magnitude}},{knob}]"])
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert err.value.key == key


def test_knobs_take_pruning_fields_as_defaults(compose):
    from confprune.schema import family_specs

    _, cfg = compose(["experiment=pareto_mnist", "pruning.include_norm=false"])
    specs = family_specs(cfg)
    assert [s.label for s in specs] == ["magnitude/unstructured", "magnitude/unstructured+int8", "l1/channel",
                                        "l1/channel+int8"][: len(specs)]
    assert not specs[0].include_norm  # from pruning
    _, cfg = compose(["experiment=pareto_mnist", "fwer=holm"])
    with pytest.raises(ConfigError, match="fwer.name"):
        check_config(cfg)


def test_a_single_int8_family_certificate_verifies(cnn):
    # a knob field (quantize) works for one family too: certified, exported, rebuilt by verify
    import confprune
    from confprune.api import certify_from_table
    from confprune.losses import make_loss
    from confprune.sweep import compute_loss_table

    model, _, x = cnn
    with torch.no_grad():
        y = model(x).argmax(1)
    family = FamilySpec("magnitude", quantize=True).build(model, example_inputs=x[:2])
    table = compute_loss_table(model, family, [0.0, 0.1, 0.2], (x, y), make_loss("label_01"), progress=False)
    res = certify_from_table(model, family, table, make_loss("label_01"), alpha=0.5, delta=0.5)
    assert res.certified and res.certificate["pruning"]["config"]["quantize"] is True
    report = confprune.verify_certificate(res.certificate, res.pruned_state, model, (x, y))
    assert report.ok, str(report)
