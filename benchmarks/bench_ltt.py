"""LTT speed: vectorised split validation vs a per-split loop (MAPIE-style), and WSR time/memory.

    python benchmarks/bench_ltt.py            # 100 λ × 10,000 points, 1000 splits of 9000/1000

Targets (issue 2): binomial or HB + fixed sequence ≤ 0.3 s; WSR ≤ 30 s and ≤ 2 GiB peak.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np
from scipy import stats as st

from confprune.stats import draw_splits, hb_pvalue, validate_splits


def loss_table(g: int, n: int, seed: int = 0) -> np.ndarray:
    """Nested binary losses with a risk rising from 0.8% to 20% (an MNIST-like curve)."""
    rng = np.random.default_rng(seed)
    r = 0.008 + 0.192 * np.linspace(0, 1, g) ** 3
    u = rng.random(n)
    return (u[None, :] < r[:, None]).astype(np.float32)


def loop_baseline(losses: np.ndarray, n_cal: int, n_splits: int, alpha: float, delta: float, bound: str, seed: int) -> float:
    """What a straightforward per-split loop does (MAPIE's risk-control style): permute, average,
    p-values, fixed sequence with a Python loop. Returns the coverage (to check both agree)."""
    rng = np.random.default_rng(seed)
    g, n = losses.shape
    ok = 0
    for _ in range(n_splits):
        perm = rng.permutation(n)
        cal, test = perm[:n_cal], perm[n_cal:]
        risk = losses[:, cal].mean(axis=1, dtype=np.float64)
        if bound == "binomial":
            p = st.binom.cdf(np.rint(risk * n_cal), n_cal, alpha)
        else:
            p = hb_pvalue(risk, n_cal, alpha)
        lam = -1
        for j in range(g):
            if p[j] > delta:
                break
            lam = j
        ok += lam < 0 or losses[lam, test].mean() <= alpha
    return ok / n_splits


def best_of(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, default=100)
    ap.add_argument("--pool", type=int, default=10_000)
    ap.add_argument("--n-cal", type=int, default=9000)
    ap.add_argument("--splits", type=int, default=1000)
    ap.add_argument("--alpha", type=float, default=0.03)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--skip-wsr", action="store_true")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    losses = loss_table(args.grid, args.pool)
    n_test = args.pool - args.n_cal
    results: dict[str, float] = {}

    def vectorised(bound: str):
        splits = draw_splits(args.pool, args.n_cal, n_test, args.splits, seed=0)
        return validate_splits(losses, splits, alpha=args.alpha, delta=args.delta, bound=bound).coverage

    vectorised("binomial")  # warm-up (scipy's first call)
    for bound in ("binomial", "hb"):
        t_vec, cov_vec = best_of(lambda b=bound: vectorised(b), 5)
        t_loop, cov_loop = best_of(lambda b=bound: loop_baseline(losses, args.n_cal, args.splits, args.alpha, args.delta, b, 0), 1)
        results[f"{bound}_vectorised_s"] = t_vec
        results[f"{bound}_loop_s"] = t_loop
        results[f"{bound}_speedup"] = t_loop / t_vec
        print(f"{bound:9s} vectorised {t_vec:7.3f} s | per-split loop {t_loop:7.3f} s | speed-up ×{t_loop / t_vec:5.1f} "
              f"| coverage {cov_vec:.3f} vs loop {cov_loop:.3f} (different random splits)")
    if not args.skip_wsr:
        tracemalloc.start()
        t = time.perf_counter()
        cov = vectorised("wsr")
        t_wsr = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        results["wsr_s"] = t_wsr
        results["wsr_peak_gib"] = peak / 2**30
        print(f"wsr       vectorised {t_wsr:7.2f} s | peak traced memory {peak / 2**30:.2f} GiB | coverage {cov:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
