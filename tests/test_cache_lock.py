"""Concurrent jobs that share a model train it once: the second waits on the lock, then loads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, sys, time, torch
    from confprune.data import TaskData
    from confprune.train import train_or_load
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (4000,), generator=g)
    data = TaskData(x, y, x[:10], y[:10], task="classification")
    trainer = {"epochs": 3, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "scheduler": "none",
               "weight_decay": 0.0, "eval_batch_size": 100}
    t = time.time()
    res = train_or_load({"name": "mnist_mlp"}, {"name": "toy"}, trainer, 0, data, sys.argv[1], progress=False)
    print(json.dumps({"from_cache": res.from_cache, "seconds": time.time() - t, "key": res.key}))
    """
)


def test_two_processes_train_the_shared_model_once(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert sorted(r["from_cache"] for r in results) == [False, True]
    assert results[0]["key"] == results[1]["key"]
    assert len(list((tmp_path / "models").glob("*.pt"))) == 1
    assert not list((tmp_path / "models").glob("*.tmp"))  # no half-written file left behind


def test_dense_metrics_are_cached_per_model_and_pool(tmp_path, caplog):
    import torch

    from confprune.data import TaskData
    from confprune.models import build_model
    from confprune.train import cached_dense_metrics, dense_metrics

    torch.manual_seed(0)
    model = build_model({"name": "mnist_mlp"}).eval()
    x, y = torch.randn(300, 1, 28, 28), torch.randint(0, 10, (300,))
    data = TaskData(x, y, x[:200], y[:200], task="classification")
    first, hit = cached_dense_metrics(model, "model-a", data, tmp_path)
    assert not hit and first == dense_metrics(model, x[:200], y[:200], "classification")
    assert cached_dense_metrics(model, "model-a", data, tmp_path) == (first, True)
    # Another pool or another model is another entry, never a stale hit.
    other = TaskData(x, y, x[100:], y[100:], task="classification")
    assert cached_dense_metrics(model, "model-a", other, tmp_path)[1] is False
    assert cached_dense_metrics(model, "model-b", data, tmp_path)[1] is False
    entries = list((tmp_path / "dense_metrics").glob("*.json"))
    assert len(entries) == 3
    for entry in entries:  # a damaged entry is reported and recomputed
        entry.write_text("{not json")
    with caplog.at_level("WARNING"):
        assert cached_dense_metrics(model, "model-a", data, tmp_path) == (first, False)
    assert any("dense-metrics cache entry" in r.message for r in caplog.records)
