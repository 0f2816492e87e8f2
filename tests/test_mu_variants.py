"""M&U variants: the update statistics of the tracker, and the eps_rel, inert_rel and sigma options of
mu_scores — hand computations, scale invariance (with a control that can fail), defaults unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from confprune.errors import OptionError
from confprune.pruning import CRITERIA, ScoreContext, build_family, prunable_parameters
from confprune.pruning.trajectory import WelfordTracker, trajectory_std


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def random_walk(model, k=9, seed=1, frozen=None):
    """k snapshots of a random walk from the model's weights (a training trajectory); entries
    where ``frozen[name]`` is True never move (inert weights)."""
    g = torch.Generator().manual_seed(seed)
    current = {n: p.detach().clone() for n, p in model.state_dict().items()}
    snaps = []
    for _ in range(k):
        step = {n: 0.05 * torch.randn(v.shape, generator=g) for n, v in current.items()}
        for n, mask in (frozen or {}).items():
            step[n][mask] = 0.0
        current = {n: v + step[n] for n, v in current.items()}
        snaps.append(current)
    return snaps


def record(model, snaps, track_updates=False):
    tracker = WelfordTracker(model, track_updates=track_updates)
    for snap in snaps:
        model.load_state_dict(snap)
        tracker.update()
    return tracker.state()


def stacked(snaps, name):
    return np.stack([s[name].numpy() for s in snaps]).astype(np.float64)


def test_tracker_records_update_statistics_only_when_asked():
    model = mlp()
    snaps = random_walk(model)
    plain, both = record(mlp(), snaps), record(mlp(), snaps, track_updates=True)
    assert not any(k.startswith("update") for k in plain)  # checkpoints trained today are unchanged
    for key, value in plain.items():  # the weight statistics do not depend on the option
        torch.testing.assert_close(both[key], value, rtol=0, atol=0)
    assert int(both["update_count"]) == len(snaps) - 1
    for name in ("0.weight", "2.bias"):
        diffs = np.diff(stacked(snaps, name), axis=0)
        np.testing.assert_allclose(trajectory_std(both, name, of="updates").numpy(), diffs.std(0, ddof=1),
                                   rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(both["update_mean/" + name].numpy(), diffs.mean(0), rtol=1e-4, atol=1e-7)


def test_update_std_without_update_statistics_says_how_to_get_them():
    model = mlp()
    state = record(model, random_walk(model))
    with pytest.raises(ValueError, match="track_updates=True"):
        trajectory_std(state, "0.weight", of="updates")
    with pytest.raises(ValueError, match="track_updates=True"):
        build_family(model, criterion="mu", trajectory=state, sigma="updates")


def mu(model, state, **options):
    return CRITERIA["mu"](model, prunable_parameters(model), ScoreContext(trajectory=state), **options)


def test_inert_rel_none_is_the_plain_score_and_the_default_differs_only_on_inert_weights():
    model = mlp()
    frozen = frozen_entries(model)
    state = record(model, random_walk(model, frozen=frozen))
    plain, default = mu(model, state, inert_rel=None), mu(model, state)
    for name, w in prunable_parameters(model).items():
        want = w.detach().abs().double() / (trajectory_std(state, name).double() + 1e-8)
        torch.testing.assert_close(plain[name], want, rtol=0, atol=0)
        inert = frozen.get(name, torch.zeros_like(w, dtype=torch.bool))
        torch.testing.assert_close(default[name][~inert], want[~inert], rtol=0, atol=0)
        assert bool((default[name][inert] == 0).all())


def test_eps_rel_by_hand():
    model = mlp()
    snaps = random_walk(model)
    state = record(model, snaps)
    got = mu(model, state, eps=1e-3, eps_rel=0.5)
    for name, w in prunable_parameters(model).items():
        sd = stacked(snaps, name).std(0, ddof=1)
        lower_median = np.sort(sd.ravel())[(sd.size - 1) // 2]  # torch.median: the lower median
        want = np.abs(w.detach().numpy()) / (sd + 1e-3 + 0.5 * lower_median)
        np.testing.assert_allclose(got[name].numpy(), want, rtol=1e-4)


def test_updates_sigma_by_hand():
    model = mlp()
    snaps = random_walk(model)
    state = record(model, snaps, track_updates=True)
    got = mu(model, state, sigma="updates", eps=0.0)
    for name, w in prunable_parameters(model).items():
        sd = np.diff(stacked(snaps, name), axis=0).std(0, ddof=1)
        np.testing.assert_allclose(got[name].numpy(), np.abs(w.detach().numpy()) / sd, rtol=1e-4)


def frozen_entries(model):
    """Freeze a third of the first layer's weights (like weights on an always-zero input)."""
    w = model.state_dict()["0.weight"]
    mask = torch.zeros_like(w, dtype=torch.bool)
    mask.view(-1)[::3] = True
    return {"0.weight": mask}


def test_inert_weights_are_pruned_first_by_default_and_last_in_the_plain_reading():
    model = mlp()
    frozen = frozen_entries(model)
    state = record(model, random_walk(model, frozen=frozen))
    n_frozen = int(frozen["0.weight"].sum())
    assert bool((trajectory_std(state, "0.weight")[frozen["0.weight"]] == 0).all())
    pool_size = sum(p.numel() for p in prunable_parameters(model).values())
    lam_first, lam_last = n_frozen / pool_size, 1 - n_frozen / pool_size
    inert = build_family(model, criterion="mu", trajectory=state)  # the default: inert_rel=0
    default = build_family(model, criterion="mu", trajectory=state, inert_rel=None)  # the plain reading
    # At λ = (frozen entries)/P the inert variant has pruned exactly the frozen entries...
    kept = inert.masks(lam_first)["0.weight"].bool()
    assert torch.equal(~kept, frozen["0.weight"])
    # ...while the original score keeps them to the very end (σ̂ = 0 gives |w|/ε).
    kept_default = default.masks(lam_last)["0.weight"].bool()
    assert torch.equal(kept_default, frozen["0.weight"])


def test_inert_threshold_is_relative_to_the_tensor():
    model = mlp()
    state = record(model, random_walk(model))
    sd = trajectory_std(state, "0.weight").double()
    r = 0.9
    got = mu(model, state, inert_rel=r)["0.weight"]
    inert = sd <= r * sd.flatten().median()
    assert bool((got[inert] == 0).all()) and bool((got[~inert] > 0).all())
    assert 0 < int(inert.sum()) < inert.numel()


def rescaled(snaps, c):
    """Layer 0 (weights and bias) × c, layer 2 weights × 1/c: the same function (ReLU)."""
    out = []
    for s in snaps:
        t = dict(s)
        t["0.weight"], t["0.bias"], t["2.weight"] = s["0.weight"] * c, s["0.bias"] * c, s["2.weight"] / c
        out.append(t)
    return out


def same_masks(fa, fb, lambdas=(0.2, 0.35, 0.5, 0.65, 0.8)):
    return all(torch.equal(fa.masks(lam)[k], fb.masks(lam)[k]) for lam in lambdas for k in fa.ranks)


@pytest.mark.parametrize(
    "options",
    [
        {"eps": 0.0, "eps_rel": 0.5},
        {"eps": 0.0, "eps_rel": 0.5, "inert_rel": 0.0},
        {"eps": 0.0, "inert_rel": 0.5},
        {"eps": 0.0, "sigma": "updates"},
        {"eps": 0.0, "sigma": "updates", "inert_rel": 0.0},
    ],
    ids=["eps_rel", "eps_rel+inert", "inert_rel", "updates", "updates+inert"],
)
def test_variants_are_scale_invariant(options):
    c = 7.0
    model = mlp()
    # Frozen entries (σ̂ = 0) only where an option handles them: with eps = 0 they would score |w|/0.
    handles_inert = options.get("eps_rel") or "inert_rel" in options
    snaps = random_walk(model, frozen=frozen_entries(model) if handles_inert else None)
    a, b = mlp(), mlp()
    traj_a = record(a, snaps, track_updates=True)
    traj_b = record(b, rescaled(snaps, c), track_updates=True)
    x = torch.randn(16, 4)
    torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)
    assert same_masks(build_family(a, criterion="mu", trajectory=traj_a, **options),
                      build_family(b, criterion="mu", trajectory=traj_b, **options))


def test_an_absolute_eps_of_the_same_size_is_not_scale_invariant():
    """Control: the invariance check above can fail. An absolute ε as large as the typical σ̂ (what
    eps_rel = 1 adds) changes the ranking when a layer is rescaled."""
    c = 7.0
    model = mlp()
    snaps = random_walk(model)
    a, b = mlp(), mlp()
    traj_a, traj_b = record(a, snaps), record(b, rescaled(snaps, c))
    typical = float(trajectory_std(traj_a, "0.weight").median())
    assert not same_masks(build_family(a, criterion="mu", trajectory=traj_a, eps=typical),
                          build_family(b, criterion="mu", trajectory=traj_b, eps=typical))


@pytest.mark.parametrize(
    "options,key",
    [({"sigma": "weight"}, "sigma"), ({"eps_rel": -1.0}, "eps_rel"), ({"inert_rel": -0.1}, "inert_rel")],
)
def test_bad_option_values_are_named(options, key):
    model = mlp()
    state = record(model, random_walk(model))
    with pytest.raises(OptionError, match=key):
        mu(model, state, **options)


def test_trainer_option_tracks_updates_without_changing_training_or_old_cache_keys():
    """trainer.trajectory.track_updates reaches the tracker: the checkpoint gains update statistics,
    the weights are those of plain tracking, and only the option *on* changes the cache key (models
    cached before the option existed keep their key)."""
    from confprune.data import TaskData
    from confprune.schema import TrainerConfig
    from confprune.train import cache_key, train_model

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    data = TaskData(train_inputs=x, train_targets=(x[:, 0] > 0).long(), pool_inputs=x, pool_targets=x[:, 0] > 0,
                    task="classification")
    runs = {}
    for on in (False, True):
        cfg = TrainerConfig(epochs=2, batch_size=16, lr=1e-2)
        cfg.trajectory.enabled, cfg.trajectory.track_updates = True, on
        model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
        torch.manual_seed(1)
        model.apply(lambda m: m.reset_parameters() if isinstance(m, nn.Linear) else None)
        _, traj = train_model(model, data, cfg, seed=0, progress=False)
        runs[on] = (model.state_dict(), traj, cfg)
    (w_off, t_off, c_off), (w_on, t_on, c_on) = runs[False], runs[True]
    for k in w_off:
        torch.testing.assert_close(w_on[k], w_off[k], rtol=0, atol=0)
    assert "update_count" not in t_off and int(t_on["update_count"]) == int(t_on["count"]) - 1 == 3
    assert trajectory_std(t_on, "0.weight", of="updates").shape == (6, 4)
    key = lambda c: cache_key({"name": "m"}, {"name": "d"}, c, 0)  # noqa: E731
    legacy = {**dataclasses_asdict(c_off)}
    legacy["trajectory"] = {k: v for k, v in legacy["trajectory"].items() if k != "track_updates"}
    assert key(c_off) == key(legacy) != key(c_on)


def dataclasses_asdict(obj):
    import dataclasses

    return dataclasses.asdict(obj)
