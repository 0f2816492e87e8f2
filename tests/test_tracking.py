"""wandb tracking: one run per job, finished even when the job fails (fake wandb module)."""

import sys
import types

import pytest

from confprune.tracking import NullTracker, tracker


class FakeRun:
    def __init__(self, **kwargs):
        self.kwargs, self.finished, self.summary, self.logged, self.artifacts = kwargs, None, {}, [], []

    def finish(self, exit_code=0):
        self.finished = exit_code

    def log(self, d):
        self.logged.append(d)

    def log_artifact(self, art):
        self.artifacts.append(art)


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
        def __init__(self, name, type):
            self.name, self.type, self.files = name, type, []

        def add_file(self, f):
            self.files.append(f)

    mod.Artifact = Artifact
    monkeypatch.setitem(sys.modules, "wandb", mod)
    return runs


def test_run_finished_with_failure_code_when_job_raises(fake_wandb, tmp_path):
    with pytest.raises(RuntimeError):
        with tracker("wandb", "offline", "p", None, group="mnist", job_type="certify", config={"a": 1}, output_dir=tmp_path):
            raise RuntimeError("job failed")
    (run,) = fake_wandb
    assert run.finished == 1
    assert run.kwargs["mode"] == "offline" and run.kwargs["group"] == "mnist" and run.kwargs["job_type"] == "certify"


def test_success_logs_summary_images_artifacts(fake_wandb, tmp_path):
    f = tmp_path / "losses.npz"
    f.write_bytes(b"x")
    with tracker("wandb", "offline", "p", None, group="g", job_type="certify", config={}, output_dir=tmp_path) as t:
        t.log_summary({"coverage": 0.97, "lambda_hat": {"deploy": 0.8}, "files": {"x": "y"}})
        t.log_images({"risk": str(tmp_path / "risk.png")})
        t.log_artifact("loss-table", "loss-table", [str(f), str(tmp_path / "missing")])
    (run,) = fake_wandb
    assert run.finished == 0
    assert run.summary["coverage"] == 0.97 and run.summary["lambda_hat/deploy"] == 0.8
    assert run.artifacts[0].files == [str(f)]


def test_disabled_or_none_never_imports_wandb(fake_wandb, tmp_path):
    for name, mode in (("none", "offline"), ("wandb", "disabled")):
        with tracker(name, mode, "p", None, group="g", job_type="j", config={}, output_dir=tmp_path) as t:
            assert type(t) is NullTracker
    assert fake_wandb == []
