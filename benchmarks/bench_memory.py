"""Peak memory of the λ sweep (G = 25 vs 100) and of a whole MNIST run, each in a fresh process.

    python benchmarks/bench_memory.py [--grids 25 100] [--pool 10000] [--repeats 3]
                                      [--pipeline-repeats 1] [--no-pipeline] [--threads N]
                                      [--env MALLOC_ARENA_MAX=2 ...]

``--env BENCH_TUNE_ALLOCATOR=1`` makes the sweep children call ``confprune.forward.tune_allocator()``
as the runner does (the pipeline runs of part 2 always do, through ``sweep.tune_allocator``;
``--env CONFPRUNE_TUNE_MALLOC=0`` turns that off).

1. ``compute_loss_table`` alone (MNIST CNN, random weights and inputs, batch 500, label_01) at
   each grid size G, every run in a fresh subprocess: peak RSS (``ru_maxrss`` of that child,
   from ``os.wait4``), the RSS before the sweep started, and glibc's main heap at the end
   (``malloc_info``: bytes obtained from the OS and bytes of it that are free). A peak far above
   the live data with most of the heap free is allocator fragmentation, not a leak.
2. ``python -m confprune.run experiment=mnist logger=none`` with a cached model, under
   ``/usr/bin/time -v`` when present (its "Maximum resident set size"; ``os.wait4`` otherwise).
   The run gets a fresh cache directory holding only links to the cached models, so the loss
   table and the dense metrics are computed, and a temporary output root. Without a cached model
   the first run trains one (reported as such) and later repeats reuse it.

Peaks vary from run to run (fragmentation depends on how the two threads interleave), so every
value is printed with the 1-minute load average, then the median and the maximum.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def glibc_heap() -> dict[str, float]:
    """glibc's main-arena bytes from the OS and free bytes in it (MiB), via malloc_info(3)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.fopen.restype = ctypes.c_void_p
    except OSError:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".xml") as tmp:
        fp = libc.fopen(tmp.name.encode(), b"w")
        libc.malloc_info(0, ctypes.c_void_p(fp))
        libc.fclose(ctypes.c_void_p(fp))
        xml = Path(tmp.name).read_text()
    first_heap = xml.split("</heap>")[0]  # heap nr="0" is the main arena (brk)
    system = re.search(r'<system type="current" size="(\d+)"/>', first_heap)
    free = re.search(r'<total type="rest" count="\d+" size="(\d+)"/>', first_heap)
    arenas = xml.count("<heap nr=")
    if system is None or free is None:
        return {}
    return {"main_arena_mib": int(system.group(1)) / 2**20, "main_arena_free_mib": int(free.group(1)) / 2**20,
            "arenas": arenas}


def child(grid_size: int, pool: int, threads: int | None) -> None:
    """Run one sweep and print a JSON line (this process's peak is read by the parent)."""
    import numpy as np
    import torch

    from confprune.losses import make_loss
    from confprune.models import build_model
    from confprune.pruning import build_family
    from confprune.sweep import compute_loss_table

    if threads:
        torch.set_num_threads(threads)
    if os.environ.get("BENCH_TUNE_ALLOCATOR") == "1":  # what the runner does (confprune.forward.tune_allocator)
        from confprune.forward import tune_allocator

        tune_allocator()
    torch.manual_seed(0)
    model = build_model({"name": "mnist_cnn"}).eval()
    x = torch.randn(pool, 1, 28, 28)
    y = torch.randint(0, 10, (pool,))
    family = build_family(model)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB
    t = time.perf_counter()
    table = compute_loss_table(model, family, np.linspace(0.0, 0.99, grid_size), (x, y),
                               make_loss("label_01"), batch_size=500, progress=False)
    seconds = time.perf_counter() - t
    print(json.dumps({"rss_before_sweep_gib": before, "sweep_s": seconds, "rows": int(table.losses.shape[0]),
                      "threads": torch.get_num_threads(), **glibc_heap()}))


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str, str]:
    """Run ``cmd``; returns (peak RSS in GiB of that child alone, stdout, stderr).

    The child is reaped with ``os.wait4``, whose rusage is that child's own (RUSAGE_CHILDREN
    would be the maximum over every child so far)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return usage.ru_maxrss / 2**20, stdout, stderr  # KiB → GiB


def sweep_peaks(grids: list[int], pool: int, repeats: int, threads: int | None, env: dict[str, str]) -> None:
    print(f"compute_loss_table alone: MNIST CNN, pool {pool}, batch 500, fresh process per run "
          f"(extra env: {', '.join(f'{k}={v}' for k, v in env.items() if k in _extra) or 'none'})")
    cmd_base = [sys.executable, __file__, "--child-grid"]
    results: dict[int, list[float]] = {g: [] for g in grids}
    for r in range(repeats):
        for g in grids:  # interleaved, so that both grid sizes meet the same machine state
            load = os.getloadavg()[0]
            cmd = [*cmd_base, str(g), "--pool", str(pool)] + (["--threads", str(threads)] if threads else [])
            peak, out, _ = run_measured(cmd, env, REPO)
            info = json.loads(out.strip().splitlines()[-1])
            results[g].append(peak)
            heap = (f"main heap {info['main_arena_mib']:.0f} MiB from the OS, {info['main_arena_free_mib']:.0f} free at the end"
                    if "main_arena_mib" in info else "")
            print(f"  G={g:4d} repeat {r + 1}: peak RSS {peak:.2f} GiB (before the sweep {info['rss_before_sweep_gib']:.2f}), "
                  f"sweep {info['sweep_s']:.1f} s on {info['threads']} threads, {heap}; load {load:.1f}")
    for g, peaks in results.items():
        print(f"  G={g:4d}: median peak {statistics.median(peaks):.2f} GiB, max {max(peaks):.2f} GiB")


def model_cache_dir() -> Path:
    root = Path(os.environ.get("PROJECT_ROOT", REPO))
    return Path(os.environ.get("CONFPRUNE_CACHE_DIR", root / ".cache" / "confprune"))


def pipeline_peaks(repeats: int, threads: int | None, env: dict[str, str]) -> None:
    time_bin = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    source = model_cache_dir() / "models"
    with tempfile.TemporaryDirectory(prefix="confprune-mem-") as tmp:
        cache, outputs = Path(tmp) / "cache", Path(tmp) / "outputs"
        (cache / "models").mkdir(parents=True)
        linked = 0
        if source.is_dir():
            for f in source.glob("*.pt"):
                (cache / "models" / f.name).symlink_to(f.resolve())
                linked += 1
        print(f"\nwhole run: python -m confprune.run experiment=mnist logger=none; {linked} cached model(s) "
              f"linked from {source}; peak via {'/usr/bin/time -v' if time_bin else 'os.wait4'}")
        run_env = {**env, "CONFPRUNE_CACHE_DIR": str(cache), "CONFPRUNE_OUTPUT_ROOT": str(outputs)}
        overrides = ["experiment=mnist", "logger=none", "sweep.progress=false"]
        if threads:
            overrides.append(f"sweep.num_threads={threads}")
        peaks = []
        for r in range(repeats):
            for stale in ("loss_tables", "dense_metrics"):  # so that the sweep runs every time
                shutil.rmtree(cache / stale, ignore_errors=True)
            load = os.getloadavg()[0]
            cmd = [sys.executable, "-m", "confprune.run", *overrides]
            if time_bin:
                cmd = [time_bin, "-v", *cmd]
            peak, _, err = run_measured(cmd, run_env, REPO)
            match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
            if match:
                peak = int(match.group(1)) / 2**20
            summaries = sorted(outputs.rglob("summary.json"), key=lambda p: p.stat().st_mtime)
            summary = json.loads(summaries[-1].read_text()) if summaries else {}
            timing = summary.get("timing", {})
            print(f"  repeat {r + 1}: peak RSS {peak:.2f} GiB; model {'cached' if summary.get('model_from_cache') else 'TRAINED in this run'}; "
                  f"sweep {timing.get('sweep_s', float('nan')):.1f} s "
                  f"({summary.get('throughput', {}).get('sweep_s_per_lambda', float('nan')):.2f} s per λ, "
                  f"{summary.get('throughput', {}).get('torch_threads', '?')} threads), validation "
                  f"{timing.get('validation_s', float('nan')):.2f} s, figures {timing.get('figures_s', float('nan')):.2f} s; "
                  f"load {load:.1f}")
            peaks.append(peak)
        print(f"  median peak {statistics.median(peaks):.2f} GiB, max {max(peaks):.2f} GiB")


_extra: set[str] = set()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, nargs="+", default=[25, 100])
    ap.add_argument("--pool", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3, help="runs per grid size")
    ap.add_argument("--pipeline-repeats", type=int, default=1)
    ap.add_argument("--no-pipeline", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every child")
    ap.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra environment for every child, e.g. MALLOC_ARENA_MAX=2")
    ap.add_argument("--child-grid", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_grid is not None:
        child(args.child_grid, args.pool, args.threads)
        return
    env = dict(os.environ)
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
        _extra.add(key)
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    sweep_peaks(args.grids, args.pool, args.repeats, args.threads, env)
    if not args.no_pipeline:
        pipeline_peaks(args.pipeline_repeats, args.threads, env)


if __name__ == "__main__":
    main()
