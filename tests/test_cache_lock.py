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
