"""Save/load round trips for every artifact a run writes or caches: each has one owner that
writes it and reads it back (loss table, summary, splits, certificate and export, checkpoint,
dense metrics)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from confprune.record import (
    Deployment,
    GridInfo,
    LambdaHat,
    RunSummary,
    SparsityHat,
    Throughput,
    read_splits,
    read_summary,
    write_splits,
    write_summary,
)
from confprune.sweep import LossTable


def test_loss_table_round_trip(tmp_path):
    grid = np.round(np.linspace(0, 0.9, 10), 10)
    rng = np.random.default_rng(0)
    table = LossTable(grid=grid, losses=(rng.random((7, 50)) < 0.2).astype(np.float32), sparsity=grid[:7] * 0.99,
                      aux={"abstention": rng.random(7)}, seconds=1.5, dense_seconds=0.25, data_fingerprint="ab" * 32)
    table.save(tmp_path / "t.npz", key="k1")
    back = LossTable.load(tmp_path / "t.npz", expected_key="k1")
    for name in ("grid", "losses", "sparsity"):
        np.testing.assert_array_equal(getattr(back, name), getattr(table, name))
    np.testing.assert_array_equal(back.aux["abstention"], table.aux["abstention"])
    assert (back.seconds, back.dense_seconds, back.data_fingerprint) == (1.5, 0.25, "ab" * 32)
    assert not back.complete and back.lambdas.tolist() == grid[:7].tolist()
    with pytest.raises(ValueError, match="cache key mismatch"):
        LossTable.load(tmp_path / "t.npz", expected_key="other")


def sample_summary() -> RunSummary:
    return RunSummary(
        config_hash="abc", experiment="x", model="mnist_cnn", dataset="mnist", synthetic_data=False, loss="label_01",
        bound="binomial", fwer="fixed_sequence", criterion="magnitude", scope="global", score_inputs=None, seed=0,
        alpha=0.03, delta=0.05, n_cal=90, n_test=10, n_splits=3, pool_size=100, grid=GridInfo(3, 3, 0.0, 0.2),
        lambdas=[0.0, 0.1, 0.2], pool_risk=[0.01, 0.02, 0.5], dense={"accuracy": 0.99}, dense_risk=0.01,
        model_from_cache=True, loss_table_from_cache=False, dense_metrics_from_cache=True,
        lambda_hat=LambdaHat(0.1, 0.0, 0.1, None), sparsity_hat=SparsityHat(0.1, None, None),
        deploy=Deployment(False, None, None), coverage=1.0, coverage_ci=[0.29, 1.0],
        iid_coverage=1.0, iid_coverage_ci=[0.29, 1.0], test_risk_median=0.0, violations=0, certified_fraction=2 / 3,
        aux_at_deploy={}, throughput=Throughput(0.1, 0.2, 2), timing={"data_s": 0.1}, files={}, output_dir="/x",
        artifacts={},
    )


def test_summary_round_trip_is_exact(tmp_path):
    s = sample_summary()
    path = write_summary(s, tmp_path)
    assert read_summary(tmp_path) == s and read_summary(path) == s
    assert list(json.loads(path.read_text())) == list(s.to_dict())  # field order is key order
    with pytest.raises(ValueError, match="missing"):
        (tmp_path / "bad.json").write_text(json.dumps({"alpha": 0.1}))
        read_summary(tmp_path / "bad.json")


def test_splits_round_trip(tmp_path):
    cols = {"split": np.arange(3), "lambda_hat": np.array([0.1, np.nan, 1 / 3]),
            "cal_risk": np.array([0.0, np.nan, 1e-17]), "violated": np.array([False, False, True]),
            "certified": np.array([True, False, True])}
    write_splits(tmp_path / "splits.csv", cols)
    back = read_splits(tmp_path)
    assert list(back) == list(cols)
    for k, v in cols.items():
        np.testing.assert_array_equal(back[k], v)


def test_certificate_and_export_round_trip(tmp_path):
    import confprune
    from confprune.export import load_certificate

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    x = torch.randn(400, 4)
    y = model(x).argmax(1)
    res = confprune.certify(model, (x, y), alpha=0.1, delta=0.1, lambdas=[0.0, 0.2, 0.4])
    paths = res.save(tmp_path)
    cert = load_certificate(tmp_path)
    assert cert == json.loads(json.dumps(res.certificate))  # what was built is what is read back
    loaded = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    loaded.load_state_dict(torch.load(paths["pruned_model"], weights_only=True))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, res.pruned_state[k])
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not a confprune certificate"):
        load_certificate(tmp_path / "other.json")


def test_checkpoint_and_dense_metrics_round_trip(tmp_path):
    from confprune.data import TaskData
    from confprune.integrity import state_dict_checksum
    from confprune.schema import TrainerConfig
    from confprune.train import cached_dense_metrics, train_or_load

    g = torch.Generator().manual_seed(0)
    data = TaskData(train_inputs=torch.randn(64, 1, 28, 28, generator=g), train_targets=torch.randint(0, 10, (64,), generator=g),
                    pool_inputs=torch.randn(32, 1, 28, 28, generator=g), pool_targets=torch.randint(0, 10, (32,), generator=g),
                    task="classification")
    args = ({"name": "mnist_mlp"}, {"name": "toy"}, TrainerConfig(epochs=1, batch_size=32), 0, data, tmp_path)
    first = train_or_load(*args, progress=False)
    second = train_or_load(*args, progress=False)
    assert not first.from_cache and second.from_cache
    assert state_dict_checksum(first.model.state_dict()) == state_dict_checksum(second.model.state_dict())
    m1, c1 = cached_dense_metrics(first.model, first.meta["checksum"], data, tmp_path)
    m2, c2 = cached_dense_metrics(second.model, second.meta["checksum"], data, tmp_path)
    assert (c1, c2) == (False, True) and m1 == m2
