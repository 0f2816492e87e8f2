"""Sweep throughput: pruned forward passes per λ vs the dense forward pass over the same pool.

    python benchmarks/bench_sweep.py [--model mnist_cnn] [--pool 10000] [--grid 10]

Target (issue 3): sweep throughput ≥ 0.9 × dense throughput (pruning overhead ≤ 10%). Both are
timed in one process on the same inputs; weights are random (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from confprune.losses import make_loss
from confprune.models import build_model
from confprune.pruning import build_family
from confprune.sweep import compute_loss_table, forward_batched


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mnist_cnn")
    ap.add_argument("--pool", type=int, default=10_000)
    ap.add_argument("--grid", type=int, default=10)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = {"name": args.model}
    model = build_model(cfg).eval()
    x = torch.randn(args.pool, 1, 28, 28)
    y = torch.randint(0, 10, (args.pool,))
    family = build_family(model)
    loss = make_loss("label_01")
    grid = np.linspace(0, 0.9, args.grid)

    def dense_pass() -> None:  # the plain dense forward over the pool, same batching and layout
        forward_batched(model, x, batch_size=args.batch)

    dense_pass()  # warm-up
    # Like for like: the mean of as many dense passes as the sweep has λ values, interleaved with
    # the sweep so that both see the same machine state.
    dense_times, sweep_times = [], []
    for lam in grid:
        dense_times.append(_timed(dense_pass))
        table = compute_loss_table(model, family, [lam], (x, y), loss, batch_size=args.batch, progress=False)
        sweep_times.append(float(table.row_seconds[0]))  # pruning + forward + loss for this λ
    dense = float(np.mean(dense_times))
    per_lambda = float(np.mean(sweep_times))
    ratio = dense / per_lambda
    print(f"{args.model}: dense pass {dense:.3f} s | sweep {per_lambda:.3f} s per λ "
          f"| throughput ratio sweep/dense = {ratio:.3f} (target ≥ 0.9)")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
