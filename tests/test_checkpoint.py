"""Issue 23: a pretrained model nobody here trained, and the user's own data, through the Hydra app.

A plain PyTorch script saves a model (state_dict of its own class, or TorchScript) and data as
.npy; one `confprune.run` command certifies it without training, and `confprune.verify`
re-derives the certificate from the user's file and a folder the verifier names. Bad input is
refused before any work, naming the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]

USER_MODULE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, d_in=12, hidden=32, classes=4):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.body(x)
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """What a user brings: their module, a trained state_dict, a TorchScript file, labelled and
    unlabelled pools as .npy (made here by a plain PyTorch loop)."""
    root = tmp_path_factory.mktemp("user")
    (root / "usermodel.py").write_text(USER_MODULE)
    sys.path.insert(0, str(root))
    try:
        from usermodel import Net  # noqa: PLC0415
    finally:
        sys.path.remove(str(root))
    torch.manual_seed(0)
    w = torch.randn(12, 4)

    def data(n, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 12, generator=g)
        return x, (x @ w + 0.5 * torch.randn(n, 4, generator=g)).argmax(1)

    xt, yt = data(4000, 1)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(15):
        for i in range(0, 4000, 200):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[i:i + 200]), yt[i:i + 200]).backward()
            opt.step()
    model.eval()
    torch.save(model.state_dict(), root / "net.pt")
    torch.jit.save(torch.jit.script(model), root / "net_ts.pt")
    x, y = data(1500, 2)
    for name, labelled in (("pool", True), ("unlabelled", False)):
        (root / name).mkdir()
        np.save(root / name / "x.npy", x.numpy())
        if labelled:
            np.save(root / name / "y.npy", y.numpy())
    return root


def _run(args, user, cwd, *, module="confprune.run"):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(user), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


SIZES = ["calibration.n_cal=1000", "calibration.n_test=500", "calibration.n_splits=50", "logger=none",
         "figures=false", "cost.latency=false"]


@pytest.mark.parametrize("form", ["state_dict", "torchscript"])
def test_a_users_checkpoint_is_certified_in_one_command_and_verifies(user, tmp_path, form):
    out = tmp_path / "run"
    model = ([f"model.path={user / 'net.pt'}", "model.target=usermodel:Net"] if form == "state_dict"
             else [f"model.path={user / 'net_ts.pt'}"])
    data, loss = ((f"dataset.path={user / 'pool'}", "loss=label_01") if form == "state_dict"
                  else (f"dataset.path={user / 'unlabelled'}", "loss=disagreement"))
    proc = _run(["model=checkpoint", *model, "dataset=tensors", data, loss, "calibration.alpha=0.2", *SIZES,
                 f"hydra.run.dir={out}"], user, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pretrained, not trained here" in proc.stdout + proc.stderr
    cert = json.loads((out / "certificate.json").read_text())
    assert cert["certified"] and cert["model"]["config"]["name"] == "checkpoint"
    from confprune.models.checkpoint import file_sha256

    src = user / ("net.pt" if form == "state_dict" else "net_ts.pt")
    assert cert["model"]["file_sha256"] == file_sha256(src) and cert["model"]["checkpoint"] == str(src.resolve())
    assert not list(Path(os.environ["CONFPRUNE_CACHE_DIR"]).rglob("models/checkpoint-*"))  # nothing trained or copied
    folder = user / ("pool" if form == "state_dict" else "unlabelled")
    ok = _run([str(out), "--dataset-root", str(folder)], user, tmp_path, module="confprune.verify")
    assert ok.returncode == 0 and "certificate VERIFIED" in ok.stdout, ok.stdout[-3000:] + ok.stderr[-2000:]
    assert "PASS  model.file_sha256" in ok.stdout
    # verify reads only data it is told: without --dataset-root it cannot be checked (exit 2) ...
    assert _run([str(out)], user, tmp_path, module="confprune.verify").returncode == 2
    # ... and another folder (one point changed) is not the certified data (exit 1)
    other = tmp_path / "other"
    other.mkdir()
    x = np.load(folder / "x.npy")
    x[0, 0] += 1.0
    np.save(other / "x.npy", x)
    if (folder / "y.npy").exists():
        np.save(other / "y.npy", np.load(folder / "y.npy"))
    bad = _run([str(out), "--dataset-root", str(other)], user, tmp_path, module="confprune.verify")
    assert bad.returncode == 1 and "FAIL  data.data_fingerprint" in bad.stdout, bad.stdout[-2000:]


@pytest.mark.parametrize("overrides,key", [
    (["model.path={u}/missing.pt", "model.target=usermodel:Net"], "model.path"),
    (["model.path={u}/net.pt", "model.target=nomodule:Net"], "model.target"),
    (["model.path={u}/net.pt", "model.target=usermodel:Missing"], "model.target"),
    (["model.path={u}/net.pt", "model.target=usermodel:Net", "model.kwargs={{hidden:8}}"], "model.path"),
    (["model.path={u}/net.pt"], "model.path"),  # a state_dict without its class
    (["model.path={u}/net_ts.pt", "model.sha256=0000"], "model.sha256"),
    (["model.path={u}/net_ts.pt", "dataset.path={u}/unlabelled"], "loss.name"),  # label_01 without labels
    (["model.path={u}/net_ts.pt", "dataset.path={u}/nowhere"], "dataset.path"),
    (["model.path={u}/net_ts.pt", "pruning=sipp"], "pruning.criterion"),  # needs a training batch
    (["model.path={u}/net_ts.pt", "pruning=channel"], "pruning.structure"),  # TorchScript: no module rebuild
    (["model=mnist_cnn"], "dataset.train_path"),  # a model trained here needs training data
])
def test_bad_input_is_refused_before_any_work(user, tmp_path, overrides, key):
    out = tmp_path / "never"
    args = ["model=checkpoint", "dataset=tensors", f"dataset.path={user / 'pool'}", *SIZES, f"hydra.run.dir={out}"]
    proc = _run([*args, *(o.format(u=user) for o in overrides)], user, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"invalid config: {key}=" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


def test_a_model_that_does_not_fit_the_data_is_refused(user, tmp_path):
    (tmp_path / "wide").mkdir()
    np.save(tmp_path / "wide" / "x.npy", np.zeros((1600, 13), dtype=np.float32))
    proc = _run(["model=checkpoint", f"model.path={user / 'net_ts.pt'}", "dataset=tensors",
                 f"dataset.path={tmp_path / 'wide'}", "loss=disagreement", *SIZES, f"hydra.run.dir={tmp_path / 'x'}"],
                user, tmp_path)
    assert proc.returncode == 2 and "invalid config: model.name='checkpoint'" in proc.stderr, proc.stderr[-2000:]
    assert "(1, 13)" not in proc.stderr or "shape (13,)" in proc.stderr


def test_the_library_loader_never_unpickles(tmp_path):
    from confprune.models import CheckpointError, load_checkpoint_model

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint_model(str(tmp_path / "evil.pt"), target="torch.nn:Linear", kwargs={"in_features": 1,
                                                                                             "out_features": 1})
