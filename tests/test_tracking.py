"""wandb tracking: run identity, dashboard summary, λ-curve table, training curves, lineage.

Fast tests use a fake wandb module; the training-curve test and the end-to-end test write real
offline wandb runs and read them back from the ``.wandb`` file with wandb's protobuf records.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest

from confprune.record import read_summary
from confprune.tracking import (
    NullTracker,
    RunIdentity,
    dashboard_summary,
    deployed_cost,
    lambda_curve_columns,
    run_group,
    run_name,
    split_risk_quantiles,
    tracker,
)

REPO = Path(__file__).resolve().parents[1]
IDENTITY = RunIdentity("alpha=0.1", "mnist/2026-01-01", ["bound:hb"])


# --------------------------------------------------------------------------------------------
# Reading an offline run back


def wandb_records(run_dir: Path) -> list:
    """The protobuf records of an offline run directory's ``.wandb`` file.

    The file is wandb's LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then
    32 KiB blocks of chunks, each with a 7-byte header (CRC-32 of type byte + data, length, type:
    1 full, 2 first, 3 middle, 4 last); a block's tail shorter than a header is padding.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"corrupt chunk at byte {pos}"
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def read_offline_run(run_dir: Path) -> dict:
    """Name, group, job_type, tags, config, summary, history rows, metric definitions and
    artifacts (name, type, input?, files, metadata) of an offline run."""
    got: dict = {"summary": {}, "history": [], "metrics": [], "artifacts": [], "config_updates": []}
    for rec in wandb_records(run_dir):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            got.update(name=rec.run.display_name, group=rec.run.run_group, job_type=rec.run.job_type,
                       tags=list(rec.run.tags),
                       config={u.key: json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            got["config_updates"] += ["/".join(u.nested_key) or u.key for u in rec.config.update]
        elif kind == "summary":
            got["summary"].update({"/".join(u.nested_key) or u.key: json.loads(u.value_json) for u in rec.summary.update})
        elif kind == "history":
            got["history"].append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item})
        elif kind == "metric":
            got["metrics"].append((rec.metric.name or rec.metric.glob_name, rec.metric.step_metric))
        elif kind == "artifact" and rec.artifact.type != "run_table":
            a = rec.artifact
            got["artifacts"].append({"name": a.name, "type": a.type, "input": a.use_after_commit,
                                     "files": sorted(c.path for c in a.manifest.contents),
                                     "metadata": json.loads(a.metadata or "{}")})
    return got


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    """Real wandb, offline, with its settings, cache and staging under tmp_path."""
    pytest.importorskip("wandb")
    for var, sub in (("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config")):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


# --------------------------------------------------------------------------------------------
# Fake wandb: the tracker's contract without writing runs


class FakeRun:
    offline = True

    def __init__(self, **kwargs):
        self.kwargs, self.finished, self.summary, self.logged, self.artifacts = kwargs, None, {}, [], []
        self.metrics = []

    def finish(self, exit_code=0):
        self.finished = exit_code

    def log(self, d):
        self.logged.append(d)

    def define_metric(self, name, step_metric=None):
        self.metrics.append((name, step_metric))

    def log_artifact(self, art):
        self.artifacts.append(("output", art))

    def _log_artifact(self, art, is_user_created, use_after_commit):
        self.artifacts.append(("input" if use_after_commit else "output", art))


@pytest.fixture
def fake_wandb(monkeypatch):
    runs = []
    mod = types.ModuleType("wandb")

    def init(**kwargs):
        runs.append(FakeRun(**kwargs))
        return runs[-1]

    mod.init = init
    mod.Image = lambda path: ("image", path)

    class Artifact:
        def __init__(self, name, type, metadata=None):
            self.name, self.type, self.metadata, self.files = name, type, metadata, []

        def add_file(self, f, name=None, policy="mutable"):
            self.files.append(f)

    mod.Artifact = Artifact
    monkeypatch.setitem(sys.modules, "wandb", mod)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return runs


def test_run_finished_with_failure_code_when_job_raises(fake_wandb, tmp_path):
    with pytest.raises(RuntimeError):
        with tracker("wandb", "offline", "p", None, identity=IDENTITY, config={"a": 1}, output_dir=tmp_path):
            raise RuntimeError("job failed")
    (run,) = fake_wandb
    assert run.finished == 1
    kw = run.kwargs
    assert (kw["mode"], kw["name"], kw["group"], kw["job_type"], kw["tags"]) == (
        "offline", "alpha=0.1", "mnist/2026-01-01", "certify", ["bound:hb"])


def test_success_logs_images_artifacts_and_a_summary_without_local_paths(fake_wandb, tmp_path):
    f = tmp_path / "losses.npz"
    f.write_bytes(b"x")
    with tracker("wandb", "offline", "p", None, identity=IDENTITY, config={}, output_dir=tmp_path) as t:
        t.log_summary({"coverage": 0.97, "lambda_hat": {"deploy": 0.8}, "output_dir": str(tmp_path), "note": "ok"})
        t.log_images({"risk": str(tmp_path / "risk.png"), "risk_pdf": str(tmp_path / "risk.pdf")})
        t.log_artifact("loss-table-abc", "loss-table", [str(f), str(tmp_path / "missing")])
        t.log_artifact("dense-m-k", "model", [str(f)], used=True)
        t.log_artifact("nothing-there", "model", [str(tmp_path / "missing")])
    (run,) = fake_wandb
    assert run.finished == 0
    assert run.summary == {"coverage": 0.97, "lambda_hat/deploy": 0.8, "note": "ok"}  # the absolute path is dropped
    assert run.logged == [{"figures/risk": ("image", str(tmp_path / "risk.png"))}]
    assert [(io, a.name, a.files) for io, a in run.artifacts] == [
        ("output", "loss-table-abc", [str(f)]), ("input", "dense-m-k", [str(f)])]
    assert ("train/*", "train/step") in run.metrics


def test_disabled_none_or_env_disabled_never_imports_wandb(fake_wandb, tmp_path, monkeypatch):
    for name, mode in (("none", "offline"), ("wandb", "disabled")):
        with tracker(name, mode, "p", None, identity=IDENTITY, config={}, output_dir=tmp_path) as t:
            assert type(t) is NullTracker and not t.active
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment wins over logger.mode
    with tracker("wandb", "offline", "p", None, identity=IDENTITY, config={}, output_dir=tmp_path) as t:
        assert type(t) is NullTracker
    assert fake_wandb == []


# --------------------------------------------------------------------------------------------
# Identity


def test_run_name_from_overrides_is_short_stable_and_leaves_out_runtime_keys():
    overrides = ["experiment=sweep_mnist_alpha", "loss=disagreement", "calibration.alpha=0.05", "bound=hb",
                 "figures=false", "sweep.num_threads=1", "hydra/launcher=joblib", "logger=wandb"]
    assert run_name(overrides, "sweep_mnist_alpha") == "alpha=0.05,bound=hb,loss=disagreement"
    assert run_name(list(reversed(overrides)), "x") == "alpha=0.05,bound=hb,loss=disagreement"  # order-free
    # Two keys ending alike keep their full names; no override left: the experiment name.
    assert run_name(["a.seed=1", "b.seed=2", "+trainer.epochs=3"], "e") == "a.seed=1,b.seed=2,epochs=3"
    assert run_name(["experiment=mnist", "paths.output_root=/tmp/x"], "mnist") == "mnist"
    long_a, long_b = run_name([f"k{i}={'a' * 20}" for i in range(9)], "e"), run_name(
        [f"k{i}={'a' * 20}" for i in range(8)] + ["k8=" + "b" * 20], "e")
    assert len(long_a) == len(long_b) == 128 and long_a != long_b  # cut, then told apart by a hash


def test_group_is_per_sweep_and_a_single_run_joins_its_experiment():
    assert run_group("mnist_smoke", "/out/multiruns/mnist_smoke/2026-12-01_10-00-00_123") == \
        "mnist_smoke/2026-12-01_10-00-00_123"
    assert run_group("mnist_smoke", None) == "mnist_smoke"


# --------------------------------------------------------------------------------------------
# What a run shows


def test_split_risk_quantiles_match_a_per_split_loop_and_a_wrong_mask_does_not():
    rng = np.random.default_rng(0)
    losses = (rng.random((6, 50)) < 0.3).astype(np.float32)
    mask = np.zeros((40, 50), dtype=bool)
    for s in range(40):
        mask[s, rng.choice(50, 20, replace=False)] = True
    # Known truth: each split's mean loss over its calibration set, by an explicit float64 loop;
    # sums of 20 values in another order agree to ~1e-16, far inside the 1e-12 tolerance.
    risk = np.array([[losses[g, mask[s]].astype(np.float64).mean() for s in range(40)] for g in range(6)])
    expected = np.quantile(risk, [0.05, 0.5, 0.95], axis=1)
    np.testing.assert_allclose(split_risk_quantiles(losses, mask), expected, rtol=0, atol=1e-12)
    # Negative control: the complement sets (the test sets) give other quantiles.
    assert not np.allclose(split_risk_quantiles(losses, ~mask), expected)


def _summary(**over):
    from confprune.record import (
        Deployment,
        GridInfo,
        LambdaHat,
        RunSummary,
        SparsityHat,
        Throughput,
    )

    base = dict(
        config_hash="abc", experiment="e", model="m", dataset="d", synthetic_data=False, loss="label_01",
        bound="hb", fwer="fixed_sequence", criterion="magnitude", scope="global", score_inputs=None, seed=0,
        alpha=0.1, delta=0.1, n_cal=10, n_test=5, n_splits=3, pool_size=15, grid=GridInfo(3, 3, 0.0, 0.5),
        lambdas=[0.0, 0.25, 0.5], pool_risk=[0.01, 0.02, 0.2], dense={"accuracy": 0.99}, dense_risk=0.01,
        model_from_cache=True, loss_table_from_cache=True, dense_metrics_from_cache=True,
        lambda_hat=LambdaHat(0.25, 0.0, 0.25, 0.25), sparsity_hat=SparsityHat(0.25, 0.25, 0.2),
        deploy=Deployment(True, 0.02, 0.03), coverage=1.0, coverage_ci=[0.3, 1.0], iid_coverage=1.0,
        iid_coverage_ci=[0.3, 1.0], test_risk_median=0.02, violations=0, certified_fraction=1.0,
        aux_at_deploy={}, throughput=Throughput(0.1, 0.1, 1), timing={"total_s": 1.0},
        files={"losses": "/home/u/out/losses.npz"}, output_dir="/home/u/out", artifacts={"losses.npz": "00"},
        cost={"dense": {"parameters": 100, "macs": 1000, "nonzero_macs": 1000, "bytes": 400,
                        "latency": {"lambda": None, "batch_1": {"median_s": 0.002}, "batch_64": {"median_s": 0.05}}},
              "deploy": {"parameters": 75, "macs": 1000, "nonzero_macs": 800, "bytes": 300,
                         "latency": {"lambda": 0.25, "batch_1": {"median_s": 0.001}, "batch_64": {"median_s": 0.04}}},
              "curve": {"lambda": [0.0, 0.25, 0.5], "parameters": [100, 75, 50], "macs": [1000] * 3,
                        "nonzero_macs": [1000, 800, 600]},
              "latency": [], "machine": {"cpu": "/proc/cpuinfo-less box"}},
    )
    return RunSummary(**{**base, **over})


def test_dashboard_summary_has_panel_keys_and_no_local_paths():
    s = _summary()
    out = dashboard_summary(s, "runs/e/2026")
    assert out["sparsity_hat/deploy"] == 0.25 and out["sparsity_hat/median"] == 0.25
    assert out["coverage"] == 1.0 and out["iid_coverage"] == 1.0 and out["certified_fraction"] == 1.0
    assert out["lambda_hat/deploy"] == 0.25 and out["alpha"] == 0.1 and out["bound"] == "hb"
    assert out["coverage_ci/low"] == 0.3 and out["dense/accuracy"] == 0.99
    assert out["cost/deploy/nonzero_macs"] == 800 and out["cost/deploy/latency_ms/batch_1"] == pytest.approx(1.0)
    assert out["cost/macs_kind"] == "nonzero_macs" and out["cost/macs_reduction"] == pytest.approx(1.25)
    assert out["cost/latency_speedup"] == pytest.approx(2.0) and out["run_dir"] == "runs/e/2026"
    assert not [k for k, v in out.items() if isinstance(v, str) and v.startswith("/")]
    assert "/home/u/out" in json.dumps(s.to_dict())  # control: the raw summary does hold local paths


def test_deployed_cost_counts_what_the_structure_saves():
    assert deployed_cost(_summary()).macs_kind == "nonzero_macs"  # unstructured: dense kernels run all MACs
    base = _summary().cost
    channel = deployed_cost(_summary(structure="channel", cost={**base, "kind": "macs"}))  # the family's cost_kind
    assert channel.macs_kind == "macs" and channel.macs_reduction == 1.0
    assert deployed_cost(_summary(cost={})) is None


def test_lambda_curve_columns_align_with_the_grid():
    s = _summary()
    cert = {"p_values": [1e-6, 0.01], "cal_risk_per_lambda": [0.01, 0.02]}  # evaluated prefix only
    cols = lambda_curve_columns(s, [0.0, 0.25, 0.5], np.array([[0.0, 0.01, 0.1], [0.01, 0.02, 0.2], [0.02, 0.03, 0.3]]),
                                cert)
    assert cols["lambda"] == [0.0, 0.25, 0.5] and cols["pool_risk"] == [0.01, 0.02, 0.2]
    assert cols["cal_risk_median"] == [0.01, 0.02, 0.2] and cols["deploy_p_value"] == [1e-6, 0.01, None]
    assert cols["deployed"] == [False, True, False] and cols["nonzero_macs"] == [1000, 800, 600]
    with pytest.raises(ValueError, match="3 values per column"):
        lambda_curve_columns(s, [0.0, 0.25])


# --------------------------------------------------------------------------------------------
# Training curves: a real offline run


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine a tiny training runs faster and steadier."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_curves_are_logged_per_step_and_only_when_trained(offline_wandb, one_thread):
    import torch
    import torch.nn.functional as F

    from confprune.data import TaskData
    from confprune.models import build_model
    from confprune.train import train_or_load

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 28, 28, generator=g)
    y = (x.flatten(1)[:, :10].argmax(1)).long()  # learnable labels
    data = TaskData(x, y, x[:16], y[:16], task="classification")
    model_cfg = {"name": "mnist_mlp", "dropout": 0.0}  # no dropout: step 1 can be recomputed exactly
    trainer = {"epochs": 2, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "scheduler": "none",
               "weight_decay": 0.0, "eval_batch_size": 64}
    run_dir = offline_wandb / "job"
    run_dir.mkdir()
    calls = []
    with tracker("wandb", "offline", "p", None, identity=IDENTITY, config={}, output_dir=run_dir) as track:
        def on_step(step, metrics):
            calls.append((step, dict(metrics)))
            track.log_train_step(step, metrics)

        trained = train_or_load(model_cfg, {"name": "toy"}, trainer, 0, data, offline_wandb / "cache", False,
                                on_step=on_step)
        again = train_or_load(model_cfg, {"name": "toy"}, trainer, 0, data, offline_wandb / "cache", False,
                              on_step=on_step)
    assert not trained.from_cache and again.from_cache
    assert [s for s, _ in calls] == list(range(1, 9))  # 2 epochs × 4 batches; the cache hit adds none
    # Known truth for step 1: loss and accuracy of the fresh model on the first batch.
    torch.manual_seed(0)
    fresh = build_model(model_cfg).train()
    first = torch.randperm(256, generator=torch.Generator().manual_seed(0))[:64]
    with torch.no_grad():
        logits = fresh(x[first])
    assert calls[0][1]["loss"] == pytest.approx(float(F.cross_entropy(logits, y[first])), rel=1e-6)
    assert calls[0][1]["accuracy"] == float((logits.argmax(1) == y[first]).double().mean())
    # Negative control: the step-2 loss (after an update, other batch) is not the step-1 value.
    assert calls[1][1]["loss"] != pytest.approx(calls[0][1]["loss"], rel=1e-6)
    assert calls[-1][1]["loss"] == trained.meta["final_train_loss"] and calls[-1][1]["epoch"] == 2.0
    # The callback only reads: the same weights without it.
    plain = train_or_load(model_cfg, {"name": "toy"}, trainer, 0, data, offline_wandb / "cache2", False)
    assert plain.meta["checksum"] == trained.meta["checksum"]

    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    got = read_offline_run(offline)
    rows = [r for r in got["history"] if "train/step" in r]
    assert [r["train/step"] for r in rows] == list(range(1, 9))
    assert [r["train/loss"] for r in rows] == pytest.approx([m["loss"] for _, m in calls])
    assert all(0.0 <= r["train/accuracy"] <= 1.0 for r in rows) and "train/lr" in rows[0]
    assert ("train/*", "train/step") in got["metrics"]


# --------------------------------------------------------------------------------------------
# End to end: a two-job sweep with logger=wandb, read back


@pytest.mark.slow
def test_sweep_with_wandb_logger_reads_back(offline_wandb):
    sweep = offline_wandb / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "confprune.run", "-m", "experiment=mnist_smoke", "logger=wandb", "figures=false",
         "sweep.num_threads=1", "cost.latency_points=0", "calibration.alpha=0.1,0.2", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    names = set()
    for job, alpha in (("0", 0.1), ("1", 0.2)):
        summary = read_summary(sweep / job)
        (offline,) = (sweep / job / "wandb").glob("offline-run-*")
        got = read_offline_run(offline)
        assert got["name"] == f"alpha={alpha},latency_points=0" and got["job_type"] == "certify"
        assert got["group"] == f"mnist_smoke/{sweep.name}"
        assert {"loss:label_01", "bound:binomial", "fwer:fixed_sequence", "criterion:magnitude",
                "structure:unstructured", "model:mnist_cnn", "dataset:mnist"} <= set(got["tags"])
        assert got["config"]["config_hash"] == summary.config_hash and "paths" not in got["config"]
        s = got["summary"]
        assert s["sparsity_hat/deploy"] == summary.sparsity_hat.deploy and s["coverage"] == summary.coverage
        assert s["certified_fraction"] == summary.certified_fraction and s["iid_coverage"] == summary.iid_coverage
        assert s["cost/deploy/nonzero_macs"] == summary.cost["deploy"]["nonzero_macs"]
        assert s["cost/deploy/latency_ms/batch_1"] > 0 and s["cost/macs_reduction"] > 1
        assert s["run_dir"] == f"{sweep.name}/{job}"  # the sweep dir is outside the output root
        local = [k for k, v in s.items() if isinstance(v, str) and str(offline_wandb) in v]
        assert not local, local
        # The λ curve as a table, with its plot.
        table = json.loads((offline / "files" / s["lambda_curve/path"]).read_text())
        cols = {c: [row[i] for row in table["data"]] for i, c in enumerate(table["columns"])}
        assert cols["lambda"] == summary.lambdas and cols["pool_risk"] == pytest.approx(summary.pool_risk)
        assert all(a <= b <= c for a, b, c in zip(cols["cal_risk_q05"], cols["cal_risk_median"], cols["cal_risk_q95"],
                                                   strict=True))
        assert sum(cols["deployed"]) == 1 and cols["lambda"][cols["deployed"].index(True)] == summary.lambda_hat.deploy
        assert all(p is not None for p in cols["deploy_p_value"]) and "nonzero_macs" in cols
        assert "_wandb/visualize/lambda_curve_plot" in got["config_updates"]  # the line plot
        assert "_wandb/visualize/risk_vs_cost_plot" in got["config_updates"]
        assert s["risk_vs_cost/nrows"] == len(summary.lambdas) + 1
        # Lineage: the dense model is an input, the loss table and the certified model outputs.
        arts = {a["name"]: a for a in got["artifacts"]}
        dense = [a for a in arts.values() if a["name"].startswith("dense-mnist_cnn-")]
        assert len(dense) == 1 and dense[0]["input"]
        table_art, certified = arts[f"loss-table-{summary.config_hash}"], arts[f"certified-mnist_cnn-{summary.config_hash}"]
        assert not table_art["input"] and table_art["files"] == ["losses.npz", "splits.csv"]
        assert certified["files"] == ["certificate.json", "pruned_model.pt", "pruned_model.sparse.pt"]
        assert certified["metadata"]["loss_table"] == table_art["name"] == f"loss-table-{summary.config_hash}"
        assert table_art["metadata"]["dense_model"] == dense[0]["name"]
        names |= {table_art["name"], certified["name"]}
        if summary.model_from_cache:  # a cached checkpoint logs no training curves
            assert not [k for row in got["history"] for k in row if k.startswith("train/")]
    assert len(names) == 4  # every job's artifacts have their own names
    # Known truth for the table's split quantiles: the re-drawn splits reproduce splits.csv.
    _check_split_redraw(sweep / "0")


def _check_split_redraw(run_dir: Path) -> None:
    """The λ curve re-draws the validation splits (``stats.draw_splits``, seeded by ``calibration.split_seed``): each split's
    calibration risk at its own λ̂ must equal the one the validation wrote to splits.csv, and a
    draw from another seed must not (negative control)."""
    from omegaconf import OmegaConf

    from confprune.record import read_splits
    from confprune.stats import draw_splits

    summary = read_summary(run_dir)
    seed = OmegaConf.load(run_dir / ".hydra" / "config.yaml").calibration.split_seed
    with np.load(run_dir / "losses.npz") as z:
        losses = z["losses"].astype(np.float64)
    splits = read_splits(run_dir)
    certified = splits["certified"]
    at = np.searchsorted(summary.lambdas, splits["lambda_hat"][certified])  # exact: both are the grid's floats

    def risk_at_lambda_hat(split_seed: int) -> np.ndarray:
        mask = draw_splits(summary.pool_size, summary.n_cal, summary.n_test, summary.n_splits,
                           split_seed).cal_mask[certified]
        return (losses[at] * mask).sum(1) / mask.sum(1)

    # Tolerance: both sides are means of the same 0/1 losses in float64; only summation order differs.
    np.testing.assert_allclose(risk_at_lambda_hat(seed), splits["cal_risk"][certified], rtol=0, atol=1e-12)
    assert not np.allclose(risk_at_lambda_hat(seed + 1), splits["cal_risk"][certified], rtol=0, atol=1e-12)


def test_a_latency_ratio_is_printed_only_outside_the_measured_spread():
    from confprune.run import _latency_ratio

    def summary(dense, deploy):
        base = _summary().cost
        lat = lambda m, lo, hi: {"batch_1": {"median_s": m, "p10_s": lo, "p90_s": hi}}  # noqa: E731
        return _summary(cost={**base, "dense": {**base["dense"], "latency": lat(*dense)},
                              "deploy": {**base["deploy"], "latency": lat(*deploy)}})

    # polyp's "14.4 -> 7.87 ms" inside the whiskers: no speed-up is claimed
    assert "no difference" in _latency_ratio(summary((14.4e-3, 6e-3, 20e-3), (7.87e-3, 6.5e-3, 15e-3)), 1)
    assert "2.00x faster" in _latency_ratio(summary((2e-3, 1.9e-3, 2.2e-3), (1e-3, 0.9e-3, 1.1e-3)), 1)
    assert _latency_ratio(_summary(), 1) == ""  # no spread recorded: nothing said
