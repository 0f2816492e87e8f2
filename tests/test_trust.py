"""Garbage in never becomes a certificate, and nothing finished is lost or overwritten: the
bad-input and output-protection matrix of the trust issue (each case asserts the message names
the key, the field or the path)."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from torch import nn
from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset, WeightedRandomSampler

import confprune
from confprune.cache import NoSpaceError, atomic_write, cached, clean_orphans
from confprune.errors import OptionError
from confprune.record import read_summary, write_json

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["experiment=mnist_smoke", "figures=false", "sweep.num_threads=1"]
GRID = [0.0, 0.2, 0.4, 0.6]


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "confprune.run", *args], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ), timeout=timeout)


# --------------------------------------------------------------------------------------------
# Bad input at the command line: one message, no traceback, exit 2, nothing started


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["seed=-1"], "seed=-1"),
        (["sweep.device=cuda"], "sweep.device='cuda'"),
        (["sweep.num_threads=-1"], "sweep.num_threads=-1"),
        (["model=unet"], "model.name='unet'"),
        (["experiment=polyp_smoke", "pruning=sipp"], "pruning.criterion='sipp'"),
        (["experiment=polyp_smoke", "dataset.root=/nonexistent/polypgen"], "dataset.root"),
        (["experiment=polyp_smoke", "dataset.image_size=0"], "dataset.image_size=0"),
        (["+dataset.pool_limt=5"], "dataset.pool_limt"),
    ],
)
def test_cli_refuses_bad_input_with_one_message(tmp_path, overrides, key):
    proc = cli(*overrides, "logger=none", f"hydra.run.dir={tmp_path / 'run'}", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert key in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run" / ".hydra").exists()  # refused before Hydra wrote anything


@pytest.mark.slow
def test_a_multirun_with_one_bad_value_starts_no_job(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("-m", *SMOKE, "calibration.alpha=0.1,0.2,1.5", f"hydra.sweep.dir={sweep}", timeout=120)
    assert proc.returncode == 2 and "job 2" in proc.stderr and "calibration.alpha=1.5" in proc.stderr, proc.stderr
    assert not any(p.is_dir() for p in sweep.iterdir())  # no job directory: nothing ran


# --------------------------------------------------------------------------------------------
# Never lose or overwrite a finished result


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    proc = cli(*SMOKE, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_a_refused_run_leaves_the_finished_run_untouched(finished):
    before = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file() and p.name != ".confprune.lock"}
    proc = cli(*SMOKE, "calibration.alpha=0.2", f"hydra.run.dir={finished}")
    assert proc.returncode == 2 and "config_hash" in proc.stderr and "Traceback" not in proc.stderr
    after = {p: p.read_bytes() for p in before}
    assert after == before  # .hydra/config.yaml and overrides.yaml included


@pytest.mark.slow
def test_a_directory_in_use_is_refused(finished, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    with FileLock(str(target / ".confprune.lock")):  # another run holds it
        proc = cli(*SMOKE, f"hydra.run.dir={target}", timeout=120)
    assert proc.returncode == 2 and "locked" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_an_unreadable_summary_is_never_overwritten(finished, tmp_path):
    target = tmp_path / "damaged"
    target.mkdir()
    (target / "summary.json").write_text("{ not json")
    proc = cli(*SMOKE, f"hydra.run.dir={target}", timeout=120)
    assert proc.returncode == 2 and "unreadable summary.json" in proc.stderr, proc.stderr
    assert (target / "summary.json").read_text() == "{ not json"


@pytest.mark.slow
def test_resume_redoes_a_run_whose_artifacts_changed(finished, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    (run / "pruned_model.pt").write_bytes(b"garbage")  # a finished run with a damaged export
    proc = cli(*SMOKE, f"hydra.run.dir={run}")
    assert proc.returncode == 0 and "running it again" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert read_summary(run).config_hash == read_summary(finished).config_hash
    assert (run / "pruned_model.pt").read_bytes() == (finished / "pruned_model.pt").read_bytes()
    proc = cli(*SMOKE, f"hydra.run.dir={run}")  # intact now: skipped
    assert "skipping" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_outputs_are_strict_json_group_readable_and_checksummed(finished):
    text = (finished / "summary.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in summary.json"))
    summary = read_summary(finished)
    assert set(summary.artifacts) >= {"losses.npz", "splits.csv", "certificate.json", "pruned_model.pt"}
    for name in summary.artifacts:
        mode = (finished / name).stat().st_mode & 0o777
        assert mode & 0o040, (name, oct(mode))  # group-readable (the usual umask), not mkstemp's 0600


@pytest.mark.slow
def test_verify_never_writes_into_a_directory_the_certificate_names(finished, tmp_path):
    cert = json.loads((finished / "certificate.json").read_text())
    planted = tmp_path / "planted_data_dir"
    cert["data"]["dataset"]["data_dir"] = str(planted)
    (tmp_path / "certificate.json").write_text(json.dumps(cert))
    from confprune.verify import main as verify_main

    code = verify_main([str(tmp_path / "certificate.json"), str(finished / "pruned_model.pt")])
    assert code == 0 and not planted.exists()


def test_atomic_write_says_no_space_left_naming_the_path(tmp_path):
    def full_disk(tmp: str) -> None:
        Path(tmp).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(NoSpaceError, match=str(tmp_path / "out.bin")):
        atomic_write(tmp_path / "out.bin", full_disk)
    assert list(tmp_path.iterdir()) == []  # no temp file left behind, nothing half-written


def test_a_cache_that_cannot_be_written_keeps_the_value(tmp_path, caplog, monkeypatch):
    def full_disk(value, tmp: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with caplog.at_level(logging.WARNING):
        value, hit = cached(tmp_path / "e.bin", lambda p: 0, lambda: 42, full_disk, "model")
    assert (value, hit) == (42, False) and "continuing with it in memory" in caplog.text
    import confprune.cache as cache_mod

    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "e.bin").write_text("7")
    cache_mod.seal(tmp_path / "ro" / "e.bin")  # a complete entry, sealed with this user's secret
    monkeypatch.setattr(cache_mod, "_writable", lambda directory: False)  # a read-only but complete cache
    value, hit = cached(tmp_path / "ro" / "e.bin", lambda p: int(p.read_text()), lambda: -1, full_disk, "model")
    assert (value, hit) == (7, True) and not (tmp_path / "ro" / "e.bin.lock").exists()


def test_orphan_temp_files_of_dead_processes_are_cleaned(tmp_path):
    import confprune.cache as cache_mod

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".x.npz.{cache_mod._HOST}.{dead.stdout.strip()}.abc123.tmp"
    mine = tmp_path / f".y.npz.{cache_mod._HOST}.{os.getpid()}.def456.tmp"
    orphan.write_text("")
    mine.write_text("")
    assert clean_orphans(tmp_path) == 1 and not orphan.exists() and mine.exists()


def test_write_json_is_strict(tmp_path):
    write_json({"a": float("nan"), "b": [1.0, float("inf")]}, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.0, None]}


# --------------------------------------------------------------------------------------------
# Garbage in: the library API


@pytest.fixture
def toy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(600, 4)
    return model, x, model(x).argmax(1).detach()


def test_non_finite_outputs_are_refused_not_certified(toy):
    model, x, y = toy

    class NaNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, inp):
            return self.lin(inp) * float("nan")

    with pytest.raises(ValueError, match="non-finite outputs .* batch 0"):
        confprune.certify(NaNModel(), (x, y), loss="disagreement", lambdas=GRID)


def test_api_refuses_bad_data_naming_it(toy):
    model, x, y = toy
    with pytest.raises(OptionError, match="batch_size=0"):
        confprune.certify(model, (x, y), batch_size=0, lambdas=GRID)
    with pytest.raises(OptionError, match="at least one data point"):
        confprune.certify(model, (x[:0], y[:0]), lambdas=GRID)
    with pytest.raises(OptionError, match="yields no batch"):
        confprune.certify(model, DataLoader(TensorDataset(x[:0], y[:0]), batch_size=10), lambdas=GRID)
    with pytest.raises(ValueError, match=r"inputs torch.int64.*x.float\(\)"):
        confprune.certify(model, (x.long(), y), lambdas=GRID)
    for sampler in (SubsetRandomSampler(range(600)), WeightedRandomSampler(torch.ones(600), 600)):
        with pytest.raises(OptionError, match="fixed order"):
            confprune.certify(model, DataLoader(TensorDataset(x, y), batch_size=100, sampler=sampler), lambdas=GRID)


def test_api_accepts_numpy_and_restores_train_mode(toy):
    model, x, y = toy
    model.train()
    res = confprune.certify(model, (x.numpy().astype(np.float64), y.numpy()), alpha=0.2, lambdas=GRID)
    assert res.certified and model.training  # NumPy (X, y) works; the caller's mode is back


def test_dict_outputs_get_a_clear_message(toy):
    model, x, y = toy

    class HFStyle(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, inp):
            return {"logits": self.inner(inp)}

    with pytest.raises(TypeError, match=r"returned a dict with keys \['logits'\]"):
        confprune.certify(HFStyle(), (x, y), lambdas=GRID)


def test_training_that_diverges_is_refused_and_not_cached(tmp_path):
    from confprune.data import TaskData
    from confprune.schema import TrainerConfig
    from confprune.train import TrainingDiverged, train_or_load

    g = torch.Generator().manual_seed(0)
    data = TaskData(train_inputs=torch.randn(64, 1, 28, 28, generator=g) * 1e30,
                    train_targets=torch.randint(0, 10, (64,), generator=g),
                    pool_inputs=torch.randn(8, 1, 28, 28), pool_targets=torch.randint(0, 10, (8,)),
                    task="classification")
    with pytest.raises(TrainingDiverged, match="trainer.lr"):
        train_or_load({"name": "mnist_mlp"}, {"name": "toy"}, TrainerConfig(epochs=1, batch_size=32, lr=1e10), 0,
                      data, tmp_path, progress=False)
    assert not list((tmp_path / "models").glob("*.pt"))


def test_bonferroni_on_an_early_stopped_table_uses_the_planned_grid():
    from confprune.stats import Bonferroni, reject_on_grid

    p = np.array([0.001, 0.004, 0.02])  # 3 of 20 planned points evaluated; δ/G = 0.005 with G = 20
    assert reject_on_grid(Bonferroni(), p, 0.1, n_grid=20).tolist() == [True, True, False]
    assert Bonferroni().reject(p, 0.1).tolist() == [True, True, True]  # δ/3 would wrongly pass 0.02
