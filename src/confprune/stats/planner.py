"""Planning a calibration before running it: expected outcome, required size, up-front feasibility.

Pure NumPy/SciPy functions on a pilot loss table L (G, N) — rows = λ grid, columns = pilot points,
e.g. a previous run's losses — or on a risk curve r (G,) with binary losses:

- :func:`expected_outcome`: the distribution of the certified index λ̂ for a calibration of
  n_cal points drawn i.i.d. from the pilot's empirical law (bootstrap through
  :func:`confprune.stats.ltt.iid_validation`), or from nested binary losses with risk curve r.
- :func:`required_n`: the smallest n_cal with P(λ̂ ≥ λ_target) ≥ power.
- :func:`feasibility`: "can anything be certified at all?" from the dense model's risk and n_cal.

The pilot is treated as the population: its own sampling error is not propagated (a pilot of N
points estimates each risk to about ±sqrt(r(1−r)/N)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import bdtr

from .fwer import NOT_CERTIFIED, FixedSequence, FwerProcedure, certified_index, make_fwer
from .ltt import check_loss_table, iid_validation
from .multirisk import min_achievable_pvalue
from .pvalues import BOUND_REGISTRY, get_bound, max_certified_count, pvalues_from_sums

Dependence = Literal["union", "nested"]
_MEAN_BOUNDS = tuple(b for b, entry in BOUND_REGISTRY.items() if not entry.sequential)  # sum-based


@dataclass(frozen=True)
class Outcome:
    """Simulated distribution of the certified grid index λ̂ (−1 = nothing certified).

    Attributes
    ----------
    lambda_index : (reps,) int, λ̂ per simulated calibration
    p_certify : float, P(anything certified)
    p_at_least : (G,) float, P(λ̂ ≥ j) for every grid index j
    q05_index, median_index, q95_index : int, quantiles of λ̂ (−1 counts as below every index)
    lambdas : (G,) grid values when given, else None (see :meth:`value`)
    """

    lambda_index: np.ndarray
    p_certify: float
    p_at_least: np.ndarray
    q05_index: int
    median_index: int
    q95_index: int
    n_cal: int
    alpha: float
    delta: float
    bound: str
    fwer: str
    lambdas: np.ndarray | None = None

    @property
    def standard_error(self) -> np.ndarray:
        """(G,) Monte Carlo standard error of ``p_at_least``."""
        p = self.p_at_least
        return np.sqrt(p * (1.0 - p) / self.lambda_index.size)

    def value(self, index: int) -> float:
        """λ value of a grid index (NaN for NOT_CERTIFIED); needs ``lambdas``."""
        if self.lambdas is None:
            raise ValueError("this outcome was computed without lambda values")
        return float("nan") if index == NOT_CERTIFIED else float(self.lambdas[index])


def _curve(curve: np.ndarray) -> np.ndarray:
    r = np.asarray(curve, dtype=np.float64)
    if r.ndim != 1 or r.size < 1 or not np.all((r >= 0) & (r <= 1)):
        raise ValueError(f"a risk curve must be a non-empty 1-D array of risks in [0, 1], got shape {r.shape}")
    return r


def _nested_counts(curve: np.ndarray, n_cal: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Loss counts (G, reps) of nested binary losses L_i(λ_j) = 1{U_i < r_j}, U_i ~ U(0, 1).

    Nested (comonotone) losses model nested pruning masks: whoever fails at λ_j also fails at any
    λ with a larger risk (**ours** as the default coupling for a bare curve). The counts at the
    sorted risks are cumulative multinomial bin counts, so no per-point loss is ever materialised.
    """
    order = np.argsort(curve, kind="stable")
    edges = curve[order]
    bins = np.diff(np.concatenate([[0.0], edges, [1.0]]))
    draws = rng.multinomial(n_cal, np.clip(bins, 0.0, None) / bins.sum(), size=reps)  # (reps, G+1)
    sorted_counts = np.cumsum(draws[:, :-1], axis=1)
    counts = np.empty((curve.size, reps), dtype=np.int64)
    counts[order] = sorted_counts.T
    return counts


def expected_outcome(
    pilot: np.ndarray,
    n_cal: int,
    alpha: float,
    delta: float,
    bound: str = "binomial",
    fwer: FwerProcedure | str = "fixed_sequence",
    reps: int = 1000,
    seed: int = 0,
    *,
    lambdas: np.ndarray | None = None,
) -> Outcome:
    """Distribution of λ̂ when calibrating on n_cal fresh points.

    Parameters
    ----------
    pilot : (G, N) pilot loss table, or (G,) risk curve of binary losses
        Table: calibrations are drawn i.i.d. from its columns (bootstrap, via
        :func:`confprune.stats.ltt.iid_validation`; any bound). Curve: nested binary losses with
        these risks (:func:`_nested_counts`; mean-based bounds only).
    n_cal : calibration size to plan for
    alpha, delta, bound, fwer : as in :func:`confprune.stats.ltt.calibrate`
    reps : Monte Carlo replications (standard error ≤ 0.5/sqrt(reps) per probability)
    seed : int
    lambdas : optional (G,) grid values, for :meth:`Outcome.value`

    Returns
    -------
    Outcome
    """
    if int(n_cal) != n_cal or n_cal < 1 or int(reps) != reps or reps < 1:
        raise ValueError(f"n_cal and reps must be positive integers, got {n_cal!r}, {reps!r}")
    procedure = make_fwer(fwer) if isinstance(fwer, str) else fwer
    arr = np.asarray(pilot)
    if arr.ndim == 2:
        idx = iid_validation(arr, n_cal=int(n_cal), n_reps=int(reps), alpha=alpha, delta=delta,
                             bound=bound, fwer=procedure, seed=seed).lambda_index
        g = arr.shape[0]
    else:
        curve = _curve(arr)
        if bound not in _MEAN_BOUNDS:
            raise ValueError(f"a risk curve supports the bounds {', '.join(_MEAN_BOUNDS)}, not {bound!r}")
        counts = _nested_counts(curve, int(n_cal), int(reps), np.random.default_rng(seed))
        p = pvalues_from_sums(bound, counts, int(n_cal), alpha)  # type: ignore[arg-type]
        idx = certified_index(procedure.reject(p, delta))
        g = curve.size
    if lambdas is not None and np.shape(lambdas) != (g,):
        raise ValueError(f"lambdas must have shape ({g},), got {np.shape(lambdas)}")
    idx = np.asarray(idx, dtype=np.int64)
    q05, q50, q95 = (int(q) for q in np.quantile(idx, [0.05, 0.5, 0.95], method="inverted_cdf"))
    return Outcome(
        lambda_index=idx,
        p_certify=float(np.mean(idx != NOT_CERTIFIED)),
        p_at_least=(idx[None, :] >= np.arange(g)[:, None]).mean(axis=1),
        q05_index=q05, median_index=q50, q95_index=q95,
        n_cal=int(n_cal), alpha=alpha, delta=delta, bound=bound, fwer=procedure.name,
        lambdas=None if lambdas is None else np.asarray(lambdas, dtype=np.float64),
    )


# ----------------------------------------------------------------------------------------------
# Required calibration size
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSize:
    """Answer of :func:`required_n`.

    n_cal : smallest n such that the power stays ≥ the target for every n' in [n, searched_up_to]
        (the binomial power is saw-toothed in n, so a single n can reach the target while n + 1
        misses it; this is the size to plan with). −1 when not reached by ``searched_up_to``.
    first_n : smallest n whose power reaches the target (−1 likewise).
    power : the power at ``n_cal`` (NaN when −1).
    method : "nested" / "union" (exact binomial on a curve) or "bootstrap" (Monte Carlo on a pilot).
    """

    n_cal: int
    first_n: int
    power: float
    target_power: float
    method: str
    searched_up_to: int


def _certified_counts(bound: str, n_max: int, alpha: float, delta: float) -> np.ndarray:
    """c(n) for n = 0..n_max: the largest loss count whose p-value is ≤ δ at size n (−1: none).

    Each bound's p-value falls with n for a fixed count, so c is non-decreasing in n and is found
    by walking up from c(n − 1): about one p-value evaluation per n.
    """
    out = np.full(n_max + 1, -1, dtype=np.int64)
    c = -1
    for n in range(1, n_max + 1):
        while c < n:
            window = np.arange(c + 1, min(c + 8, n) + 1)
            # p is non-decreasing in the count, so the valid counts form a prefix of the window.
            valid = int(np.count_nonzero(pvalues_from_sums(bound, window, n, alpha) <= delta))  # type: ignore[arg-type]
            c += valid
            if valid < window.size:
                break
        out[n] = c
    return out


def _curve_power(curve: np.ndarray, target: int, counts: np.ndarray, dependence: str) -> np.ndarray:
    """P(λ̂ ≥ λ_target) under fixed-sequence testing for n = 0..len(counts)−1 (binary losses).

    Fixed sequence reaches the target iff every λ_j, j ≤ target, is rejected, i.e. k_j ≤ c(n).
    ``nested``: the bottleneck, P(Binom(n, max_{j≤t} r_j) ≤ c(n)); exact for nested losses (the
    largest-risk point's count dominates the others) and an upper bound for any other coupling.
    ``union``: 1 − Σ_{j≤t} P(Binom(n, r_j) > c(n)), a lower bound valid under any dependence.
    """
    n = np.arange(counts.size, dtype=np.int64)
    c = np.maximum(counts, 0).astype(np.int64)
    risks = curve[: target + 1]
    if dependence == "nested":
        return np.where(counts < 0, 0.0, bdtr(c, n, float(risks.max())))
    miss = np.zeros(counts.size)
    for r in risks:
        miss += np.where(counts < 0, 1.0, 1.0 - bdtr(c, n, float(r)))
    return np.clip(1.0 - miss, 0.0, 1.0)


def required_n(
    pilot_or_curve: np.ndarray,
    target_index: int,
    alpha: float,
    delta: float,
    bound: str = "binomial",
    power: float = 0.9,
    *,
    dependence: Dependence = "union",
    fwer: FwerProcedure | str = "fixed_sequence",
    reps: int = 1000,
    seed: int = 0,
    n_max: int = 2**18,
) -> SampleSize:
    """Smallest calibration size n with P(λ̂ ≥ λ_target) ≥ ``power``.

    Parameters
    ----------
    pilot_or_curve : (G,) risk curve of binary losses, or (G, N) pilot loss table
    target_index : grid index j of the λ one hopes to certify
    alpha, delta, bound : as in calibration (a curve needs a mean-based bound)
    power : target probability
    dependence : curve only. ``"union"`` (default) guarantees the power whatever the joint law of
        the losses across λ (union bound over the grid points up to the target); ``"nested"``
        uses the bottleneck risk max_{j≤t} r_j, exact for nested losses, optimistic otherwise.
    fwer, reps, seed : pilot table only (Monte Carlo with common random numbers across n)
    n_max : give up above this size (the exact curve scan costs ~30 µs per n up to 2·bracket)

    Notes
    -----
    Search: doubling n = 16, 32, … until the power reaches the target (a bracket), then
    - curve: the exact power at every n up to twice the bracket (vectorised; cheap), because the
      binomial power is saw-toothed in n and a bisection on it can stop on a tooth;
    - pilot: integer bisection inside the bracket on the Monte Carlo power, which is noisy
      (±1/(2√reps)) and saw-toothed too: read the answer as approximate; n_cal = first_n there.
    """
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must lie in (0, 1), got {power!r}")
    arr = np.asarray(pilot_or_curve)
    g = arr.shape[0]
    if int(target_index) != target_index or not 0 <= target_index < g:
        raise ValueError(f"target_index must be a grid index in [0, {g}), got {target_index!r}")
    target = int(target_index)
    if arr.ndim == 1:
        curve = _curve(arr)
        if bound not in _MEAN_BOUNDS:
            raise ValueError(f"a risk curve supports the bounds {', '.join(_MEAN_BOUNDS)}, not {bound!r}")
        if dependence not in ("union", "nested"):
            raise ValueError(f"dependence must be 'union' or 'nested', got {dependence!r}")
        if not isinstance(make_fwer(fwer) if isinstance(fwer, str) else fwer, FixedSequence):
            raise ValueError("the exact curve planner covers fixed-sequence testing; use a pilot table otherwise")
        if curve[: target + 1].max() >= alpha:
            return SampleSize(-1, -1, float("nan"), power, dependence, 0)  # never: a risk ≥ α on the way

        def power_at(n: int) -> float:
            c = max_certified_count(bound, n, alpha, delta)  # type: ignore[arg-type]
            counts = np.full(n + 1, -1, dtype=np.int64)
            counts[n] = c
            return float(_curve_power(curve, target, counts, dependence)[n])

        hi = 16
        while power_at(hi) < power:
            if hi >= n_max:
                return SampleSize(-1, -1, float("nan"), power, dependence, n_max)
            hi = min(2 * hi, n_max)
        top = min(2 * hi, n_max)
        while True:  # widen the scan until the power stays at the target at its end (saw teeth)
            counts = _certified_counts(bound, top, alpha, delta)
            curve_power = _curve_power(curve, target, counts, dependence)
            good = curve_power >= power
            bad = np.flatnonzero(~good)
            stays = int(bad[-1]) + 1 if bad.size else 0
            if stays <= top or top >= n_max:
                break
            top = min(2 * top, n_max)
        first = int(np.argmax(good)) if good.any() else -1
        if stays > top:  # the power still dips below the target at n_max
            return SampleSize(-1, first, float("nan"), power, dependence, top)
        return SampleSize(stays, first, float(curve_power[stays]), power, dependence, top)

    table = check_loss_table(arr, "pilot")
    get_bound(bound).check_table(table, "the pilot table")
    procedure = make_fwer(fwer) if isinstance(fwer, str) else fwer

    def mc_power(n: int) -> float:
        out = expected_outcome(table, n, alpha, delta, bound, procedure, reps, seed)
        return float(out.p_at_least[target])

    lo, hi = 0, 16
    while mc_power(hi) < power:
        if hi >= n_max:
            return SampleSize(-1, -1, float("nan"), power, "bootstrap", n_max)
        lo, hi = hi, min(2 * hi, n_max)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mc_power(mid) >= power:
            hi = mid
        else:
            lo = mid
    return SampleSize(hi, hi, mc_power(hi), power, "bootstrap", hi)


# ----------------------------------------------------------------------------------------------
# Up-front feasibility
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feasibility:
    """Up-front answer before any sweep.

    status : "feasible", "unlikely" (the dense model passes with probability < ``likely``) or
        "infeasible" (nothing can be certified)
    message : one line a CLI can print
    min_n_cal : smallest n at which even zero calibration losses certify
    max_certified_count : most calibration errors still certified at n_cal (binary losses,
        mean-based bounds; None for wsr)
    p_dense_certified : P(the dense model, first in the fixed sequence, is certified) if its true
        risk equals ``dense_risk`` (binary losses; None for wsr or when dense_risk is None)
    """

    status: str
    message: str
    min_n_cal: int
    max_certified_count: int | None
    p_dense_certified: float | None

    @property
    def feasible(self) -> bool:
        return self.status != "infeasible"


def min_calibration_size(bound: str, alpha: float, delta: float, n_max: int = 2**26) -> int:
    """Smallest n whose best possible p-value (zero losses) is ≤ δ; −1 if none up to n_max.

    (binomial / hoeffding / hb: ⌈log δ / log(1−α)⌉; bentkus: ⌈(log δ − 1) / log(1−α)⌉.) Found by
    doubling and bisection on :meth:`Bound.min_pvalue`, which falls with n for every bound.
    """
    get_bound(bound)
    lo, hi = 0, 1
    while min_achievable_pvalue(bound, hi, alpha, delta) > delta:
        if hi >= n_max:
            return -1
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if min_achievable_pvalue(bound, mid, alpha, delta) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


def feasibility(
    dense_risk: float | None,
    n_cal: int,
    alpha: float,
    delta: float,
    bound: str = "binomial",
    *,
    likely: float = 0.5,
) -> Feasibility:
    """Can anything be certified with n_cal points, given the dense model's (estimated) risk?

    Fixed-sequence testing starts at λ = 0 (the dense model); if it is not certified nothing is.
    Infeasible when n_cal is below :func:`min_calibration_size` or the dense risk is ≥ α;
    "unlikely" when the dense model would pass with probability < ``likely`` (binary losses).
    """
    if int(n_cal) != n_cal or n_cal < 1:
        raise ValueError(f"n_cal must be a positive integer, got {n_cal!r}")
    n_cal = int(n_cal)
    min_n = min_calibration_size(bound, alpha, delta)
    max_count = max_certified_count(bound, n_cal, alpha, delta) if bound in _MEAN_BOUNDS else None  # type: ignore[arg-type]
    p_dense = None
    if dense_risk is not None and max_count is not None:
        p_dense = 0.0 if max_count < 0 else float(bdtr(int(max_count), n_cal, float(dense_risk)))
    if min_n < 0 or n_cal < min_n:
        need = "no size" if min_n < 0 else f"n_cal ≥ {min_n}"
        msg = (f"infeasible: with n_cal = {n_cal} even zero calibration losses cannot certify "
               f"risk ≤ {alpha:g} at δ = {delta:g} with the {bound} bound; need {need}")
        return Feasibility("infeasible", msg, min_n, max_count, p_dense)
    if dense_risk is not None and dense_risk >= alpha:
        msg = (f"infeasible: the dense model's risk {dense_risk:.4g} is ≥ α = {alpha:g}; the first "
               "λ tested (no pruning) cannot pass, so nothing can be certified: raise α")
        return Feasibility("infeasible", msg, min_n, max_count, p_dense)
    limit = "" if max_count is None else f" (at most {max_count} losses among {n_cal} points)"
    if p_dense is not None and p_dense < likely:
        msg = (f"unlikely: the dense model's risk {dense_risk:.4g} is too close to α = {alpha:g}; it "
               f"is certified with probability {p_dense:.2f}{limit}: raise α or n_cal")
        return Feasibility("unlikely", msg, min_n, max_count, p_dense)
    chance = "" if p_dense is None else f"; the dense model passes with probability {p_dense:.2f}"
    msg = f"feasible: n_cal = {n_cal} ≥ {min_n}{limit}{chance}"
    return Feasibility("feasible", msg, min_n, max_count, p_dense)

