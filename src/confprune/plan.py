"""Plan a certification before paying for it: ``python -m confprune.plan <run dir | losses.npz>``.

From a pilot loss table (a previous run's ``losses.npz``, e.g. a quick run on a small pool) and a
calibration size, the planner says up front whether anything can be certified (the dense risk
against α, the smallest n that could certify even with zero losses), what a calibration of n
points is expected to certify (median λ̂ and sparsity with 5–95% over bootstrap calibration sets,
P(certify anything)), and how many calibration points a target sparsity needs (power 0.9 by
default). The statistics are :mod:`confprune.stats.planner`'s (bootstrap on the pilot, union
bound for the sample size: ours).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .stats import expected_outcome, feasibility, required_n, resolve_bound
from .sweep import LossTable


@dataclass
class Plan:
    """What the planner says (numbers by name; :meth:`lines` prints them)."""

    alpha: float
    delta: float
    n_cal: int
    bound: str
    feasibility: Any
    outcome: Any | None
    sparsity: np.ndarray
    target: dict[str, Any] | None
    pilot_points: int = 0  # N, the pilot's points (the planner's stand-in population)

    def warnings(self) -> list[str]:
        """Sizes beyond the pilot are extrapolated from it (its sampling error is not propagated)."""
        out = []
        sizes = [("n_cal", self.n_cal)] + ([("the required n_cal", self.target["n_cal"])] if self.target else [])
        for what, n in sizes:
            if self.pilot_points and n > self.pilot_points:
                out.append(f"warning: {what} = {n} is {n / self.pilot_points:.1f}× the pilot's {self.pilot_points} points: "
                           "beyond the pilot the planner resamples the pilot as if it were the population (its own "
                           "sampling error is not propagated); read this as a rough extrapolation and confirm with a "
                           "larger pilot")
        return out

    def lines(self) -> list[str]:
        out = [f"feasibility: {self.feasibility.message}"]
        o = self.outcome
        if o is not None:
            q = [self.sparsity[max(i, 0)] if i >= 0 else None for i in (o.q05_index, o.median_index, o.q95_index)]
            fmt = ["—" if v is None else f"{v:.3f}" for v in q]
            out.append(f"expected with n_cal={self.n_cal}: P(certify anything) = {o.p_certify:.3f}; certified sparsity "
                       f"median {fmt[1]} [5–95%: {fmt[0]} – {fmt[2]}] ({o.lambda_index.size} bootstrap draws)")
        if self.target is not None:
            t = self.target
            out.append(f"target sparsity {t['sparsity']:.3f} (λ = {t['lambda']:g}): n_cal ≥ {t['n_cal']} for power "
                       f"{t['power']:g} (first reached at n = {t['first_n']}; {t['method']})")
        return out + self.warnings()


def plan(table: LossTable, *, alpha: float, delta: float, n_cal: int, bound: str = "auto",
         target_sparsity: float | None = None, power: float = 0.9, reps: int = 500, seed: int = 0) -> Plan:
    """Plan from a pilot :class:`~confprune.sweep.LossTable` (its pool stands for the data)."""
    losses = table.losses
    bound = resolve_bound(bound, losses)
    dense_risk = table.dense_risk
    feas = feasibility(dense_risk, n_cal, alpha, delta, bound)
    outcome = None
    if feas.status != "impossible":
        outcome = expected_outcome(losses, n_cal, alpha, delta, bound=bound, reps=reps, seed=seed, lambdas=table.lambdas)
    target = None
    if target_sparsity is not None:
        j = int(np.searchsorted(table.sparsity, target_sparsity))
        if j >= table.sparsity.size:
            raise ValueError(f"target sparsity {target_sparsity} is beyond the pilot grid (max {table.sparsity[-1]:.3f})")
        size = required_n(losses, j, alpha, delta, bound=bound, power=power, reps=reps, seed=seed)
        target = {"sparsity": float(table.sparsity[j]), "lambda": float(table.lambdas[j]), "n_cal": size.n_cal,
                  "first_n": size.first_n, "power": power, "method": size.method}
    return Plan(alpha, delta, n_cal, bound, feas, outcome, table.sparsity, target, int(losses.shape[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m confprune.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("pilot", help="a run directory (its losses.npz) or a losses.npz file")
    parser.add_argument("--alpha", type=float, required=True)
    parser.add_argument("--delta", type=float, default=None,
                        help="default: the pilot run's δ (its summary.json), else 0.05")
    parser.add_argument("--n-cal", type=int, required=True, help="the calibration size you plan to use")
    parser.add_argument("--bound", default="auto")
    parser.add_argument("--target-sparsity", type=float, help="how many calibration points does this sparsity need?")
    parser.add_argument("--power", type=float, default=0.9)
    parser.add_argument("--reps", type=int, default=500)
    args = parser.parse_args(argv)
    path = Path(args.pilot)
    run_dir = path if path.is_dir() else path.parent
    path = path / "losses.npz" if path.is_dir() else path
    if args.delta is None:
        args.delta = _pilot_delta(run_dir)
    for key, value in (("--alpha", args.alpha), ("--delta", args.delta), ("--power", args.power)):
        if not 0 < value < 1:
            print(f"confprune.plan: {key}={value!r} is not allowed; allowed: a number in the open interval (0, 1)",
                  file=sys.stderr)
            return 2
    for key, value in (("--n-cal", args.n_cal), ("--reps", args.reps)):
        if value < 1:
            print(f"confprune.plan: {key}={value!r} is not allowed; allowed: an integer ≥ 1", file=sys.stderr)
            return 2
    try:
        table = LossTable.load(path)
        result = plan(table, alpha=args.alpha, delta=args.delta, n_cal=args.n_cal, bound=args.bound,
                      target_sparsity=args.target_sparsity, power=args.power, reps=args.reps)
    except (OSError, ValueError) as err:
        print(f"confprune.plan: {err}", file=sys.stderr)
        return 2
    print(f"pilot: {path} ({table.losses.shape[1]} points, {table.losses.shape[0]} grid points, dense risk "
          f"{table.dense_risk:.4f}); alpha={args.alpha:g} delta={args.delta:g} bound={result.bound}")
    print("\n".join(result.lines()))
    return 0


def _pilot_delta(run_dir: Path) -> float:
    """The δ the pilot run used (its summary.json), else 0.05."""
    from .record import read_summary

    try:
        return float(read_summary(run_dir).delta)
    except (OSError, ValueError, TypeError, KeyError):
        return 0.05


if __name__ == "__main__":
    sys.exit(main())
