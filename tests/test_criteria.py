"""Pruning criteria from the literature: hand computations, invariances, data hygiene, coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from confprune.pruning import (
    CRITERIA,
    ScoreContext,
    build_family,
    prunable_parameters,
    sipp_batch_size,
)
from confprune.pruning.trajectory import WelfordTracker, trajectory_std


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def record_trajectory(model, snapshots):
    """Feed a list of state_dicts through a WelfordTracker, as training would after each step."""
    tracker = WelfordTracker(model)
    for snap in snapshots:
        model.load_state_dict(snap)
        tracker.update()
    return tracker.state()


def random_snapshots(model, k=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    base = {n: p.detach().clone() for n, p in model.state_dict().items()}
    return [{n: v + 0.05 * torch.randn(v.shape, generator=g) for n, v in base.items()} for _ in range(k)]


def test_welford_matches_numpy_std():
    model = mlp()
    snaps = random_snapshots(model)
    state = record_trajectory(model, snaps)
    for name in ("0.weight", "2.bias"):
        stacked = np.stack([s[name].numpy() for s in snaps])
        np.testing.assert_allclose(trajectory_std(state, name).numpy(), stacked.std(0, ddof=1), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(state["mean/" + name].numpy(), stacked.mean(0), rtol=1e-5, atol=1e-7)


def test_mu_scores_by_hand():
    model = mlp()
    snaps = random_snapshots(model)
    state = record_trajectory(model, snaps)  # the model now holds the last snapshot (w_T)
    pool = prunable_parameters(model)
    scores = CRITERIA["mu"](model, pool, ScoreContext(trajectory=state), eps=1e-8)
    for name, w in pool.items():
        sd = np.stack([s[name].numpy() for s in snaps]).std(0, ddof=1)
        np.testing.assert_allclose(scores[name].numpy(), np.abs(w.detach().numpy()) / (sd + 1e-8), rtol=1e-4)


def test_mu_is_scale_invariant_and_magnitude_is_not():
    c = 7.0
    model = mlp()
    snaps = random_snapshots(model)
    scaled_snaps = []
    for s in snaps:  # layer 0 (weights and bias) × c, layer 2 weights × 1/c: same function (ReLU)
        t = dict(s)
        t["0.weight"], t["0.bias"], t["2.weight"] = s["0.weight"] * c, s["0.bias"] * c, s["2.weight"] / c
        scaled_snaps.append(t)
    a, b = mlp(), mlp()
    traj_a, traj_b = record_trajectory(a, snaps), record_trajectory(b, scaled_snaps)
    x = torch.randn(16, 4)
    torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)
    mu_a = build_family(a, criterion="mu", trajectory=traj_a, eps=0.0)
    mu_b = build_family(b, criterion="mu", trajectory=traj_b, eps=0.0)
    mag_a, mag_b = build_family(a), build_family(b)
    for lam in (0.2, 0.5, 0.8):
        ma, mb = mu_a.masks(lam), mu_b.masks(lam)
        assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert any(not torch.equal(mag_a.masks(0.5)[k], mag_b.masks(0.5)[k]) for k in mag_a.ranks)


def test_mu_without_trajectory_says_how_to_retrain():
    # the library names its own argument (the Hydra config refuses this case at its check, naming
    # trainer.trajectory.enabled)
    with pytest.raises(ValueError, match="trajectory=.*WelfordTracker"):
        build_family(mlp(), criterion="mu")


def sipp_reference(w: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """Loop transcription of the deterministic SiPP sensitivity; acts (B, J, P) non-negative."""
    n_out, n_in = w.shape
    out = torch.zeros(n_out, n_in, dtype=torch.float64)
    for b in range(acts.shape[0]):
        for i in range(n_out):
            for j in range(n_in):
                vals = []
                for p in range(acts.shape[2]):
                    same = [k for k in range(n_in) if (w[i, k] > 0) == (w[i, j] > 0) and w[i, k] != 0]
                    den = sum(float(w[i, k] * acts[b, k, p]) for k in same)
                    vals.append(0.0 if den == 0 else float(w[i, j] * acts[b, j, p]) / den)
                out[i, j] = max(out[i, j], float(np.mean(vals)))
    return out


def test_sipp_linear_by_hand_with_negative_inputs_split():
    model = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.5, -1.0]]))
    x = torch.tensor([[1.0, 2.0, -1.0], [0.0, 1.0, 3.0]])
    pool = prunable_parameters(model, include_bias=False)
    got = CRITERIA["sipp"](model, pool, ScoreContext(score_inputs=x))["0.weight"]
    acts = torch.cat([x.clamp_min(0), (-x).clamp_min(0)])[:, :, None]  # four non-negative inputs
    np.testing.assert_allclose(got.numpy(), sipp_reference(model[0].weight.detach(), acts).numpy(), rtol=1e-6)  # float32 products
    # By hand: w_00 = 1 has the positive set {w_00 = 1, w_02 = 3}; on the copy max(x_0, 0) = (1, 2, 0)
    # its share is 1·1 / (1·1 + 3·0) = 1, the largest possible.
    assert got[0, 0].item() == pytest.approx(1.0)


def test_sipp_conv_matches_loop_over_patches():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 2)
    model = nn.Sequential(conv)
    x = torch.rand(2, 2, 3, 3)  # non-negative: no split
    got = CRITERIA["sipp"](model, {"0.weight": conv.weight}, ScoreContext(score_inputs=x))["0.weight"]
    patches = F.unfold(x, 2)  # (B, 8, 4)
    want = sipp_reference(conv.weight.detach().reshape(3, -1), patches).reshape(conv.weight.shape)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)  # the reference multiplies in float32


def test_sipp_refuses_biases_and_needs_training_inputs():
    model = mlp()
    with pytest.raises(ValueError, match="include_bias=False"):
        build_family(model, criterion="sipp", score_inputs=torch.randn(4, 4))
    with pytest.raises(ValueError, match="training inputs"):
        build_family(model, criterion="sipp", include_bias=False)


def test_sipp_batch_size_formula():
    # η = 6 + 3 = 9 output units, η* = 6: ⌈3·log(8·6·9/1e-16)⌉
    assert sipp_batch_size(mlp()) == int(np.ceil(3 * np.log(8 * 6 * 9 / 1e-16)))


@pytest.mark.slow
def test_sipp_batch_comes_from_training_data_never_the_pool(compose, tmp_path, monkeypatch):
    import confprune.pruning as pruning_pkg
    from confprune.data import load_dataset
    from confprune.pipeline import run

    seen = {}
    original = pruning_pkg.CRITERIA["sipp"]

    def spy(model, pool, ctx, *, batch_size=None):
        scores = original(model, pool, ctx, batch_size=batch_size)
        seen["x"] = ctx.score_inputs.clone()  # the batch the criterion drew
        return scores

    monkeypatch.setitem(pruning_pkg.CRITERIA, "sipp", spy)
    _, cfg = compose(["experiment=mnist_smoke", "pruning=sipp", "figures=false", "export=false",
                      "pruning.batch_size=64"], tmp_path)
    s = run(cfg, tmp_path).summary
    data = load_dataset(cfg.dataset)
    rows = {r.numpy().tobytes() for r in seen["x"]}
    assert len(seen["x"]) == 64 and s.score_inputs["source"] == "training set"
    assert rows <= {r.numpy().tobytes() for r in data.train_inputs}
    assert not rows & {r.numpy().tobytes() for r in data.pool_inputs}


@pytest.mark.slow
@pytest.mark.parametrize("criterion", ["layerwise", "mu", "sipp", "sipp_hybrid", "random"])
def test_coverage_holds_for_every_criterion(compose, tmp_path, criterion):
    from confprune.pipeline import run

    _, cfg = compose(["experiment=mnist_smoke", f"pruning={criterion}", "figures=false", "export=false"], tmp_path)
    s = run(cfg, tmp_path).summary
    tol = 3 * np.sqrt(s.delta * (1 - s.delta) / s.n_splits)  # binomial MC error over splits
    assert s.iid_coverage >= 1 - s.delta - tol
    assert s.coverage >= 1 - s.delta - tol


def hybrid_family(seed=0, delta_failure=1e-16):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.rand(40, 12)
    return model, build_family(model, criterion="sipp_hybrid", include_bias=False, seed=seed, score_inputs=x,
                               delta_failure=delta_failure)


def test_hybrid_sampling_is_unbiased():
    # E[count_j / (m p_j)] = 1 for every entry with p_j > 0. Var = (1 − p_j)/(m p_j), so over R
    # replications the mean has standard error sqrt((1 − p_j)/(m p_j R)); we allow 4 of them
    # (each of the 6 checks fails by chance with probability ≈ 6e-5).
    from confprune.pruning.hybrid import sample_group

    p = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05, 0.0], dtype=torch.float64)
    m, reps = 5, 20000
    g = torch.Generator().manual_seed(0)
    mean = sum(sample_group(p, m, torch.rand(m, generator=g, dtype=torch.float64)) for _ in range(reps)) / reps
    se = torch.sqrt((1 - p[:5]) / (m * p[:5] * reps))
    assert torch.all((mean[:5] - 1).abs() <= 4 * se)
    assert mean[5] == 0  # zero sensitivity is never drawn


def test_hybrid_samples_on_the_mnist_cnn_shapes():
    # The rule picks sampling where its bound is smaller. On a randomly initialised CNN with uniform
    # inputs that happens only with a loose failure probability (δ_f = 1e-3); at the default
    # δ_f = 1e-16 the hybrid then coincides with deterministic SiPP. (On the trained CNN the default
    # already samples about half of the groups at λ ≥ 0.7: reported in the README.)
    from confprune.models import MnistCNN

    torch.manual_seed(0)
    model = MnistCNN()
    x = torch.rand(32, 1, 28, 28)
    loose = build_family(model, criterion="sipp_hybrid", include_bias=False, score_inputs=x, delta_failure=1e-3)
    loose.factors(0.9)
    assert 0 < loose.sampled_fraction[0.9] < 1
    strict = build_family(model, criterion="sipp_hybrid", include_bias=False, score_inputs=x)
    det = build_family(model, criterion="sipp", include_bias=False, score_inputs=x)
    assert all(torch.equal(a, b) for a, b in zip(strict.masks(0.9).values(), det.masks(0.9).values(), strict=True))


def test_hybrid_decision_follows_the_error_rule():
    from confprune.pruning.hybrid import sampling_error

    _, fam = hybrid_family()
    lam = 0.6
    f = fam.factors(lam)
    keep = super(type(fam), fam).masks(lam)  # the deterministic budget masks
    for n, s in fam.sens.items():
        s2, k2 = s.reshape(s.shape[0], -1), keep[n].reshape(s.shape[0], -1)
        sign2 = fam.signs[n].reshape(s.shape[0], -1)
        f2 = f[n].reshape(s.shape[0], -1)
        for i in range(s2.shape[0]):
            for sgn in (1.0, -1.0):
                side = sign2[i] == sgn
                m = int((k2[i] & side).sum())
                total = float(s2[i][side].sum())
                if m == 0 or total == 0:
                    continue
                err_det = total - float(s2[i][side & k2[i]].sum())
                err_rand = float(sampling_error(torch.tensor([m]), torch.tensor([total]), fam.log_terms[n])[0])
                sampled = bool(((f2[i][side] != 0) & (f2[i][side] != 1)).any()) or (
                    err_det > err_rand and not torch.equal(f2[i][side] != 0, k2[i][side])
                )
                if err_det > err_rand:
                    assert sampled or torch.all(f2[i][side] == 1.0)  # sampling may draw exactly the top set
                else:
                    assert torch.equal(f2[i][side], k2[i][side].double())  # deterministic top-m, no reweighting


def test_hybrid_kept_sets_nested_and_export_exact():
    from confprune.export import pruned_state_dict

    model, fam = hybrid_family()
    prev = None
    for lam in np.linspace(0, 0.95, 20):
        kept = torch.cat([m.reshape(-1) for m in fam.masks(float(lam)).values()])
        if prev is not None:
            assert torch.all(kept <= prev)
        prev = kept
    state = pruned_state_dict(model, fam, 0.7)
    applied = fam.apply(dict(model.named_parameters()), 0.7)
    for k in fam.ranks:
        assert torch.equal(state[k], applied[k])
    assert fam.sparsity(0.7) == pytest.approx(
        sum(int((state[k] == 0).sum()) for k in fam.ranks) / fam.pool_size
    )
