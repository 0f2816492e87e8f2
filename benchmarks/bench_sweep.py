"""Sweep speed: ``compute_loss_table`` per λ against two baselines measured in the same process.

    python benchmarks/bench_sweep.py [--models cnn mlp unet] [--pool 10000] [--unet-pool 450]
                                     [--grid 10] [--repeats 3] [--threads N] [--json PATH]
                                     [--batch 500] [--unet-batch 64] [--impl MODULE:FUNCTION]
                                     [--tune-allocator]

Baselines, on the same module and the same inputs (random weights and inputs: speed does not
depend on the values):

(a) the loop a user would write with ``torch.nn.utils.prune``: per λ a ``copy.deepcopy`` of the
    model, ``prune.global_unstructured(..., pruning_method=prune.L1Unstructured, amount=λ)`` over
    every weight and bias (the pool of ``build_family(model)``), a
    ``DataLoader(TensorDataset(x, y), batch_size=1000)``, eval + ``no_grad`` forward, the same loss.
    Losses that compare with the dense model (unlabeled) get one dense pass, counted in (a).
(b) the best plain dense forward of the same ``nn.Module`` over the pool: eval, inference_mode,
    the pool already in the layout tried, best of contiguous / channels_last × batch
    64, 128, 250, 500, 1000, 2000 and the sweep's own batch size. No pruning, no loss: a floor.

The sweep per λ is the wall time of one ``compute_loss_table`` call over the whole grid divided
by the grid size (so its dense pass, mask building and loss are all counted); (a) likewise.
``--impl`` benchmarks another function with ``compute_loss_table``'s signature whose result has
``.losses`` (G, N), e.g. a candidate rewrite, against the same baselines.
Targets: sweep ≤ 1.15 × (b) and ≥ 3 × faster than (a). Each figure is the median of
``--repeats`` runs with (b), (a) and the sweep interleaved within every repeat so that all three
see the same machine state; the 1-minute load average is printed beside each, because on a
shared machine it changes the result more than anything in the code (see README).

Also printed: the achieved GFLOP/s of (b) (multiply-accumulates of every Conv/ConvTranspose/Linear
counted from the shapes, × 2, over the time) against a float32 ``torch.mm`` peak at 1 thread and
at the thread count in use, and how many loss entries (a) and the sweep disagree on (they prune
the same weights up to ties but run different layouts and batches, so argmax can flip rarely).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

from confprune.losses import Loss, make_loss
from confprune.models import build_model
from confprune.pruning import build_family
from confprune.sweep import compute_loss_table

MODEL_CONFIGS = {
    "cnn": {"name": "mnist_cnn"},
    "mlp": {"name": "mnist_mlp"},
    "unet": {"name": "unet", "width": 8, "depth": 3},
}
# (b) tries more batch sizes than the sweep's default: on a 2-core machine with a 32 MiB L3,
# batches of 128-250 MNIST images run 1.8x faster than 500 (activations stay in cache)
DENSE_BATCHES = (64, 128, 250, 500, 1000, 2000)
USER_BATCH = 1000  # what the user loop (a) uses: DataLoader(..., batch_size=1000)


@dataclass
class Case:
    """One benchmark subject: a module, its evaluation pool and the sweep's settings."""

    name: str
    model: nn.Module
    inputs: torch.Tensor  # (N, C, H, W)
    targets: torch.Tensor  # (N,) class labels or (N, 1, H, W) masks
    loss: Loss
    batch_size: int  # the sweep's batch size for this model


def make_case(name: str, pool: int, unet_pool: int, seed: int = 0, batch: int = 500, unet_batch: int = 64) -> Case:
    """Random weights and inputs of the real shapes: MNIST 1×28×28 or polyp-like 3×64×64."""
    torch.manual_seed(seed)
    model = build_model(MODEL_CONFIGS[name]).eval()
    if name == "unet":
        x = torch.randn(unet_pool, 3, 64, 64)
        y = (torch.rand(unet_pool, 1, 64, 64) > 0.5).float()
        return Case(name, model, x, y, make_loss("seg_disagreement"), batch_size=unet_batch)
    x = torch.randn(pool, 1, 28, 28)
    y = torch.randint(0, 10, (pool,))
    return Case(name, model, x, y, make_loss("label_01"), batch_size=batch)


def _load() -> float:
    return os.getloadavg()[0]


def _layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t.contiguous()


# ---------------------------------------------------------------- (b) plain dense forward


def dense_forward_fn(case: Case, batch: int, channels_last: bool) -> Callable[[], None]:
    """A plain dense forward over the pool with the module and the pool prepared in advance."""
    module = copy.deepcopy(case.model).eval()
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    pool = _layout(case.inputs, channels_last)
    n = pool.shape[0]

    @torch.inference_mode()
    def run() -> None:
        for s in range(0, n, batch):
            module(pool[s : s + batch])

    return run


def pick_dense_config(case: Case) -> tuple[str, int, bool]:
    """The fastest (layout, batch) of the plain forward: one warm-up and one timed pass each."""
    best: tuple[float, str, int, bool] | None = None
    batches = sorted({*DENSE_BATCHES, case.batch_size})
    for channels_last in (False, True):
        for batch in batches:
            run = dense_forward_fn(case, batch, channels_last)
            run()  # warm-up: oneDNN builds its primitives on the first call
            seconds = _timed(run)
            label = "channels_last" if channels_last else "contiguous"
            if best is None or seconds < best[0]:
                best = (seconds, label, batch, channels_last)
    assert best is not None
    return best[1], best[2], best[3]


# ---------------------------------------------------------------- (a) the user's prune loop


def _weights_and_biases(module: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every trainable weight and bias (BatchNorm included): the pool of ``build_family(model)``."""
    return [
        (m, pname)
        for m in module.modules()
        for pname, p in m.named_parameters(recurse=False)
        if pname in ("weight", "bias") and p.requires_grad
    ]


def user_prune_loop(case: Case, grid: np.ndarray) -> np.ndarray:
    """What a user writes with torch.nn.utils.prune; returns the loss table (G, N)."""
    loader = DataLoader(TensorDataset(case.inputs, case.targets), batch_size=USER_BATCH)
    dense_outputs: list[torch.Tensor] | None = None
    if not case.loss.labeled:  # the loss compares with the dense model: one dense pass
        case.model.eval()
        with torch.no_grad():
            dense_outputs = [case.model(x) for x, _ in loader]
    rows = []
    for lam in grid:
        model = copy.deepcopy(case.model)
        prune.global_unstructured(
            _weights_and_biases(model), pruning_method=prune.L1Unstructured, amount=float(lam)
        )
        model.eval()
        values = []
        with torch.no_grad():
            for i, (x, y) in enumerate(loader):
                out = model(x)
                # labeled losses here (label_01, selective, seg_miss) never read the dense output
                dense = out if dense_outputs is None else dense_outputs[i]
                values.append(case.loss(dense, out, y))
        rows.append(torch.cat(values).numpy())
    return np.stack(rows)


# ---------------------------------------------------------------- FLOPs and the matmul peak


def macs_per_sample(model: nn.Module, sample: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv2d, ConvTranspose2d and Linear for one input (1, ...).

    Other layers (ReLU, pooling, BatchNorm, concatenation) are memory-bound and not counted."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.ConvTranspose2d):
            kh, kw = module.kernel_size
            total += inputs[0].numel() * (module.out_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        with torch.inference_mode():
            model.eval()(sample)
    finally:
        for h in handles:
            h.remove()
    return total


def matmul_peak_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best float32 torch.mm rate (GFLOP/s, 2·n³ per product) at ``threads`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up
        best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    finally:
        torch.set_num_threads(before)
    return 2 * n**3 / best / 1e9


# ---------------------------------------------------------------- the benchmark


@dataclass
class Result:
    """Median seconds (and the load average beside each) for one model."""

    model: str
    pool: int
    grid: int
    batch_size: int
    threads: int
    dense_config: str
    dense_s: float  # (b) per pool pass
    user_s_per_lambda: float  # (a)
    sweep_s_per_lambda: float
    dense_runs: list[float] = field(default_factory=list)
    user_runs: list[float] = field(default_factory=list)
    sweep_runs: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # median process CPU seconds, same units
    loads: list[float] = field(default_factory=list)  # 1-min load average at each repeat
    dense_gflops: float = 0.0
    differing_entries: float = 0.0  # fraction of (λ, point) entries where (a) and the sweep differ
    max_risk_gap: float = 0.0  # max over λ of |risk (a) − risk sweep|


def bench_model(case: Case, grid: np.ndarray, repeats: int, sweep_fn: Callable[..., Any] = compute_loss_table) -> Result:
    label, dense_batch, channels_last = pick_dense_config(case)
    dense_run = dense_forward_fn(case, dense_batch, channels_last)
    family = build_family(case.model)

    def sweep() -> np.ndarray:
        return np.asarray(sweep_fn(case.model, family, grid, (case.inputs, case.targets), case.loss,
                                   batch_size=case.batch_size, progress=False).losses)

    sweep_table = sweep()  # warm-up (and the table to compare)
    user_table = user_prune_loop(case, grid[:1])  # warm-up
    dense_runs, user_runs, sweep_runs, loads = [], [], [], []
    cpu_runs: dict[str, list[float]] = {"dense": [], "user": [], "sweep": []}
    for r in range(repeats):
        loads.append(_load())
        # rotate the order so that no method always runs first after a pause
        steps = [("dense", dense_run), ("user", lambda: user_prune_loop(case, grid)), ("sweep", sweep)]
        for name, fn in steps[r % 3:] + steps[: r % 3]:
            t, c = time.perf_counter(), time.process_time()
            out = fn()
            seconds = time.perf_counter() - t
            # CPU time of this process: less sensitive than wall time to other jobs taking the
            # cores, but it counts OpenMP threads spinning at barriers
            cpu_runs[name].append((time.process_time() - c) / (1 if name == "dense" else grid.size))
            if name == "dense":
                dense_runs.append(seconds)
            elif name == "user":
                user_runs.append(seconds / grid.size)
                user_table = out
            else:
                sweep_runs.append(seconds / grid.size)
                sweep_table = out
    dense_s = statistics.median(dense_runs)
    macs = macs_per_sample(case.model, case.inputs[:1])
    differ = user_table != sweep_table
    return Result(
        model=case.name, pool=case.inputs.shape[0], grid=grid.size, batch_size=case.batch_size,
        threads=torch.get_num_threads(), dense_config=f"{label}, batch {dense_batch}",
        dense_s=dense_s, user_s_per_lambda=statistics.median(user_runs),
        sweep_s_per_lambda=statistics.median(sweep_runs), dense_runs=dense_runs,
        user_runs=user_runs, sweep_runs=sweep_runs, loads=loads,
        cpu={k: statistics.median(v) for k, v in cpu_runs.items()},
        dense_gflops=2 * macs * case.inputs.shape[0] / dense_s / 1e9,
        differing_entries=float(differ.mean()),
        max_risk_gap=float(np.abs(user_table.mean(1) - sweep_table.mean(1)).max()),
    )


def report(res: Result, peaks: dict[int, float]) -> None:
    def runs(xs: list[float]) -> str:
        return "[" + ", ".join(f"{x:.3f}" for x in xs) + "]"

    loads = ", ".join(f"{x:.1f}" for x in res.loads)
    threads = res.threads
    peak = peaks[threads]
    print(f"\n{res.model}: pool {res.pool}, {res.grid} λ, sweep batch {res.batch_size}, "
          f"{threads} torch threads, load average at each repeat [{loads}]")
    print(f"  (b) best plain dense forward   {res.dense_s:7.3f} s per pool  {runs(res.dense_runs)}  ({res.dense_config})")
    print(f"  (a) torch.prune user loop      {res.user_s_per_lambda:7.3f} s per λ     {runs(res.user_runs)}")
    print(f"  sweep (compute_loss_table)     {res.sweep_s_per_lambda:7.3f} s per λ     {runs(res.sweep_runs)}")
    print(f"  sweep / (b) = {res.sweep_s_per_lambda / res.dense_s:.2f} (target ≤ 1.15)   "
          f"(a) / sweep = {res.user_s_per_lambda / res.sweep_s_per_lambda:.2f} (target ≥ 3)")
    cpu = res.cpu
    print(f"  CPU seconds (medians): (b) {cpu['dense']:.3f}, (a) {cpu['user']:.3f}, sweep {cpu['sweep']:.3f} → "
          f"sweep / (b) = {cpu['sweep'] / cpu['dense']:.2f}, (a) / sweep = {cpu['user'] / cpu['sweep']:.2f}")
    print(f"  (b) achieves {res.dense_gflops:.1f} GFLOP/s = {100 * res.dense_gflops / peak:.0f}% of the "
          f"torch.mm peak at {threads} thread(s) ({peak:.0f} GFLOP/s; 1 thread: {peaks[1]:.0f})")
    print(f"  (a) vs sweep: {100 * res.differing_entries:.3f}% of loss entries differ, "
          f"max |Δ risk| over λ {res.max_risk_gap:.5f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODEL_CONFIGS), choices=list(MODEL_CONFIGS))
    ap.add_argument("--pool", type=int, default=10_000, help="MNIST-shaped pool size (cnn, mlp)")
    ap.add_argument("--unet-pool", type=int, default=450, help="3×64×64 pool size (unet)")
    ap.add_argument("--grid", type=int, default=10, help="number of λ values in [0, 0.99]")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--batch", type=int, default=500, help="the sweep's batch size for cnn and mlp")
    ap.add_argument("--unet-batch", type=int, default=64, help="the sweep's batch size for unet")
    ap.add_argument("--impl", default="confprune.sweep:compute_loss_table",
                    help="the sweep to time, MODULE:FUNCTION with compute_loss_table's signature")
    ap.add_argument("--tune-allocator", action="store_true",
                    help="call confprune.forward.tune_allocator() first (what the runner does), for all three")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tune_allocator:
        from confprune.forward import tune_allocator

        print(f"tune_allocator(): {tune_allocator()} (glibc mmap/trim thresholds raised for all three)")
    grid = np.linspace(0.0, 0.99, args.grid)
    module_name, _, func_name = args.impl.partition(":")
    sweep_fn = getattr(importlib.import_module(module_name), func_name)
    peaks = {t: matmul_peak_gflops(t) for t in sorted({1, torch.get_num_threads()})}
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; "
          f"float32 torch.mm 2048² peak: " + ", ".join(f"{t} thread(s) {g:.0f} GFLOP/s" for t, g in peaks.items())
          + f"; load average {_load():.1f}; sweep = {args.impl}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    results = []
    for name in args.models:
        case = make_case(name, args.pool, args.unet_pool, batch=args.batch, unet_batch=args.unet_batch)
        res = bench_model(case, grid, args.repeats, sweep_fn)
        report(res, peaks)
        results.append(res)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"matmul_peak_gflops": peaks, "results": [asdict(r) for r in results]}, fh, indent=1)


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
