"""Pareto testing: certify the cheapest of many pruning configurations under one or several risks.

Laufer-Goldshtein, Fisch, Barzilay & Jaakkola (ICLR 2023), "Efficiently controlling multiple risks
with Learn-Then-Test (Pareto testing)". Configurations c = 1..C (criterion × structure × ratio ×
quantisation …) each have a cost fixed before calibration (MACs, latency, bytes) and K risks.

1. Split the n calibration points at random (seeded, before any loss is seen) into an optimisation
   part (fraction f) and a testing part.
2. On the optimisation part, estimate every configuration's K risks and keep the Pareto front of
   (risk_1, …, risk_K, cost), all minimised.
3. Order the front by the optimisation-part p-value max_k p_k (most promising first; ties: the
   more expensive, i.e. safer, configuration first — **ours**).
4. Fixed-sequence test that list on the testing part with the intersection–union p-value
   max_k p_k at level δ; the certified set is the rejected prefix.
5. Deploy the cheapest certified configuration (``NOT_CERTIFIED`` = −1 when the prefix is empty).

Validity: the order is a function of the optimisation part only, which is independent of the
testing part, so conditionally on it fixed-sequence testing controls the FWER at δ; every
certified configuration (hence the deployed one) has all its risks ≤ α_k with probability ≥ 1−δ.
NumPy/SciPy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .fwer import NOT_CERTIFIED
from .ltt import is_binary
from .pvalues import get_bound, pvalues_from_sums, wsr_pvalue

#: Default optimisation fraction, as in the paper's public code (n_cal1 = n_cal / 2); see
#: docs/pareto_testing.md for why the power is flat around it.
DEFAULT_OPT_FRACTION = 0.5


@dataclass(frozen=True)
class ParetoResult:
    """Pareto testing on one calibration set.

    Attributes
    ----------
    front : (F,) int, configurations on the optimisation-part Pareto front (ascending index)
    front_risks : (K, F) float, their optimisation-part risk estimates (for a risk-vs-cost figure)
    front_costs : (F,) float, their costs
    order : (F,) int, the front in testing order (most promising first)
    opt_pvalues : (F,) float, combined optimisation-part p-values along ``order``
    test_pvalues : (F,) float, combined testing-part p-values along ``order``
    rejected : (F,) bool along ``order``: the rejected prefix (the certified set)
    certified_index : int, the deployed configuration, or NOT_CERTIFIED (−1)
    certified_cost : float, its cost (NaN when nothing is certified)
    n_opt, n_test : sizes of the two parts
    """

    front: np.ndarray
    front_risks: np.ndarray
    front_costs: np.ndarray
    order: np.ndarray
    opt_pvalues: np.ndarray
    test_pvalues: np.ndarray
    rejected: np.ndarray
    certified_index: int
    certified_cost: float
    n_opt: int
    n_test: int
    alphas: np.ndarray = field(repr=False)
    delta: float = 0.1
    bounds: tuple[str, ...] = ("hb",)

    @property
    def certified(self) -> bool:
        return self.certified_index != NOT_CERTIFIED

    @property
    def certified_set(self) -> np.ndarray:
        """(R,) every certified configuration, in testing order."""
        return self.order[self.rejected]


@dataclass(frozen=True)
class ParetoSplits:
    """Pareto testing repeated over S random optimisation/testing splits of the same points.

    certified_index (S,) int (−1 = not certified), certified_cost (S,) float (NaN when not
    certified), front_size (S,) int, n_rejected (S,) int.
    """

    certified_index: np.ndarray
    certified_cost: np.ndarray
    front_size: np.ndarray
    n_rejected: np.ndarray

    def violated(self, true_risks: np.ndarray, alphas: float | Sequence[float]) -> np.ndarray:
        """(S,) bool: a configuration was deployed and one of its true risks exceeds its α.

        ``true_risks`` has shape (K, C) or (C,) (known truth in a simulation, or the pool risk).
        """
        risks = np.atleast_2d(np.asarray(true_risks, dtype=np.float64))
        a = np.broadcast_to(np.asarray(alphas, dtype=np.float64), (risks.shape[0],))
        bad_config = (risks > a[:, None]).any(axis=0)
        ok = self.certified_index != NOT_CERTIFIED
        return ok & bad_config[np.maximum(self.certified_index, 0)]


def pareto_front(objectives: np.ndarray) -> np.ndarray:
    """Boolean mask (C,) of the non-dominated rows of ``objectives`` (C, M), all minimised.

    Row a dominates row b when a ≤ b in every column and a < b in at least one; rows with equal
    objectives do not dominate each other (both stay on the front).
    """
    obj = np.asarray(objectives, dtype=np.float64)
    if obj.ndim != 2 or obj.shape[1] < 1:
        raise ValueError(f"objectives must have shape (C, M), got {obj.shape}")
    if not np.all(np.isfinite(obj)):
        raise ValueError("objectives must be finite")
    # Sort lexicographically (column 0 first): a dominator always precedes what it dominates,
    # and identical rows are adjacent.
    order = np.lexsort(obj.T[::-1])
    srt = obj[order]
    new_group = np.ones(srt.shape[0], dtype=bool)
    new_group[1:] = np.any(srt[1:] != srt[:-1], axis=1)
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    uniq = srt[starts]  # distinct rows, in lexicographic order
    if obj.shape[1] == 1:
        u_dom = np.arange(uniq.shape[0]) > 0
    elif obj.shape[1] == 2:
        # Every earlier distinct row has a column-0 value ≤ this one's, so this row is dominated
        # iff the smallest column-1 value among earlier distinct rows is ≤ its own.
        earlier_min = np.minimum.accumulate(np.concatenate([[np.inf], uniq[:-1, 1]]))
        u_dom = earlier_min <= uniq[:, 1]
    else:
        # Earlier distinct row a dominates b iff a ≤ b column-wise; chunked (b, a) boolean tables.
        u_dom = np.zeros(uniq.shape[0], dtype=bool)
        chunk = max(1, 2**22 // uniq.shape[0])
        for lo in range(0, uniq.shape[0], chunk):
            block = uniq[lo:lo + chunk]
            le = uniq[None, :, 0] <= block[:, 0, None]
            for m in range(1, uniq.shape[1]):
                le &= uniq[None, :, m] <= block[:, m, None]
            le[np.arange(block.shape[0]), np.arange(lo, lo + block.shape[0])] = False
            u_dom[lo:lo + block.shape[0]] = le.any(axis=1)
    mask = np.empty(obj.shape[0], dtype=bool)
    mask[order] = ~u_dom[group]
    return mask


def split_order(n: int, split: int, seed: int) -> np.ndarray:
    """Random permutation of the n calibration points for split ``split`` (seeded, data-free).

    The first ⌊f·n⌋ entries form the optimisation part, the rest the testing part, both in this
    random order (which is also the order WSR bets in). Split s does not depend on how many
    splits are drawn.
    """
    seq = np.random.SeedSequence(int(seed), spawn_key=(0x9A7E, int(split)))
    return np.random.default_rng(seq).permutation(n)


def _prepare(losses: np.ndarray, costs: np.ndarray, alphas: object, bounds: object,
             opt_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], int, int]:
    table = np.asarray(losses)
    if table.ndim == 2:
        table = table[None]
    if table.ndim != 3 or min(table.shape) < 1:
        raise ValueError(f"losses must have shape (K, C, n) or (C, n), got {np.shape(losses)}")
    if not np.all(np.isfinite(table)) or table.min() < 0 or table.max() > 1:
        raise ValueError("losses must be finite and lie in [0, 1]")
    k, c, n = table.shape
    cost = np.asarray(costs, dtype=np.float64)
    if cost.shape != (c,) or not np.all(np.isfinite(cost)):
        raise ValueError(f"costs must be {c} finite values (one per configuration), got shape {cost.shape}")
    alpha = np.broadcast_to(np.asarray(alphas, dtype=np.float64), (k,)).copy()
    if np.any((alpha <= 0) | (alpha >= 1)):
        raise ValueError(f"every alpha must lie in (0, 1), got {alpha}")
    bound_list = (bounds,) * k if isinstance(bounds, str) else tuple(bounds)  # type: ignore[arg-type]
    if len(bound_list) != k:
        raise ValueError(f"bounds must be one name or {k} names (one per risk)")
    for kk, b in enumerate(bound_list):
        get_bound(b).check_table(table[kk], f"risk {kk}'s losses")
    if not 0.0 < opt_fraction < 1.0:
        raise ValueError(f"opt_fraction must lie in (0, 1), got {opt_fraction!r}")
    n_opt = int(np.floor(opt_fraction * n))
    if n_opt < 1 or n - n_opt < 1:
        raise ValueError(f"n = {n} points cannot be split into two non-empty parts at f = {opt_fraction}")
    return table, cost, alpha, bound_list, n_opt, n - n_opt


def _mean_pvalues(bounds: tuple[str, ...], sums: np.ndarray, n: int, alpha: np.ndarray) -> np.ndarray:
    """Per-risk p-values from loss sums of shape (K, ...) for mean-based bounds (K, ...)."""
    out = np.empty(sums.shape)
    for k, b in enumerate(bounds):
        out[k] = pvalues_from_sums(b, sums[k], n, float(alpha[k]))  # type: ignore[arg-type]
    return out


def _wsr_combined(table: np.ndarray, configs: np.ndarray, points: np.ndarray, bounds: tuple[str, ...],
                  alpha: np.ndarray, delta: float, mean_p: np.ndarray | None) -> np.ndarray:
    """Combined p-values (len(configs),) where some risks use WSR on ``points`` (in that order)."""
    per_risk = []
    for k, b in enumerate(bounds):
        if get_bound(b).sequential:
            per_risk.append(wsr_pvalue(table[k][np.ix_(configs, points)].astype(np.float64), float(alpha[k]), delta))
        else:
            assert mean_p is not None
            per_risk.append(mean_p[k])
    return np.max(np.stack(per_risk), axis=0)


def _one_split(table, cost, alpha, bounds, delta, perm, n_opt, opt_sums, total_sums):
    """Pareto testing for one split given the optimisation-part loss sums (K, C)."""
    n = perm.size
    n_test = n - n_opt
    opt_risk = opt_sums / n_opt
    front = np.flatnonzero(pareto_front(np.column_stack([opt_risk.T, cost])))
    sequential = [get_bound(b).sequential for b in bounds]
    has_wsr = any(sequential)
    mean_bounds = tuple("hb" if seq else b for b, seq in zip(bounds, sequential, strict=True))  # placeholders
    opt_mean = _mean_pvalues(mean_bounds, opt_sums[:, front], n_opt, alpha)
    test_mean = _mean_pvalues(mean_bounds, (total_sums - opt_sums)[:, front], n_test, alpha)
    if has_wsr:
        opt_p = _wsr_combined(table, front, perm[:n_opt], bounds, alpha, delta, opt_mean)
        test_p = _wsr_combined(table, front, perm[n_opt:], bounds, alpha, delta, test_mean)
    else:
        opt_p, test_p = opt_mean.max(axis=0), test_mean.max(axis=0)
    rank = np.lexsort((-cost[front], opt_p))  # most promising first; ties: safer (costlier) first
    order = front[rank]
    test_p = test_p[rank]
    rejected = np.cumprod(test_p <= delta).astype(bool)
    if rejected.any():
        certified_set = order[rejected]
        best = certified_set[np.argmin(cost[certified_set])]  # first cheapest in testing order
        certified, certified_cost = int(best), float(cost[best])
    else:
        certified, certified_cost = NOT_CERTIFIED, float("nan")
    return front, opt_risk[:, front], order, opt_p[rank], test_p, rejected, certified, certified_cost


def pareto_test(
    losses: np.ndarray,
    costs: np.ndarray,
    alphas: float | Sequence[float],
    delta: float,
    *,
    bounds: str | Sequence[str] = "hb",
    opt_fraction: float = DEFAULT_OPT_FRACTION,
    seed: int = 0,
) -> ParetoResult:
    """Pareto testing on one calibration set (the split is drawn from ``seed``).

    Parameters
    ----------
    losses : array of shape (K, C, n) or (C, n)
        Per-sample losses in [0, 1] of risk k for configuration c on calibration point i.
    costs : array of shape (C,), fixed before calibration (lower is better)
    alphas : one α or K values in (0, 1)
    delta : float in (0, 1)
    bounds : one bound name or K names (``binomial`` needs binary losses; ``wsr`` bets in the
        split's random order)
    opt_fraction : fraction f of the points used to find and order the front (default 0.5)
    seed : the split's seed; split 0 of :func:`pareto_test_splits` with the same seed

    Returns
    -------
    ParetoResult
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    table, cost, alpha, bound_list, n_opt, n_test = _prepare(losses, costs, alphas, bounds, opt_fraction)
    perm = split_order(table.shape[2], 0, seed)
    opt_sums = table[:, :, perm[:n_opt]].astype(np.float64).sum(axis=2)
    total = table.astype(np.float64).sum(axis=2)
    front, risks, order, opt_p, test_p, rejected, idx, idx_cost = _one_split(
        table, cost, alpha, bound_list, delta, perm, n_opt, opt_sums, total)
    return ParetoResult(
        front=front, front_risks=risks, front_costs=cost[front], order=order, opt_pvalues=opt_p,
        test_pvalues=test_p, rejected=rejected, certified_index=idx, certified_cost=idx_cost,
        n_opt=n_opt, n_test=n_test, alphas=alpha, delta=delta, bounds=bound_list,
    )


def pareto_test_splits(
    losses: np.ndarray,
    costs: np.ndarray,
    alphas: float | Sequence[float],
    delta: float,
    *,
    n_splits: int,
    bounds: str | Sequence[str] = "hb",
    opt_fraction: float = DEFAULT_OPT_FRACTION,
    seed: int = 0,
) -> ParetoSplits:
    """Pareto testing over ``n_splits`` random optimisation/testing splits of the same points.

    Same inputs as :func:`pareto_test`; split s is identical to ``pareto_test(seed=...)``'s
    split when s = 0. All optimisation-part loss sums come from one matrix product
    (K·C, n) @ (n, S); the per-split work is the front and a fixed-sequence pass.
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    if int(n_splits) != n_splits or n_splits < 1:
        raise ValueError(f"n_splits must be a positive integer, got {n_splits!r}")
    table, cost, alpha, bound_list, n_opt, _ = _prepare(losses, costs, alphas, bounds, opt_fraction)
    k, c, n = table.shape
    perms = np.stack([split_order(n, s, seed) for s in range(n_splits)])
    opt_mask = np.zeros((n_splits, n), dtype=bool)
    np.put_along_axis(opt_mask, perms[:, :n_opt], True, axis=1)
    # 0/1 sums are exact in float32 below 2^24 points; fractional losses use float64.
    dtype = np.float32 if all(is_binary(table[i]) for i in range(k)) and n < 2**24 else np.float64
    flat = table.reshape(k * c, n).astype(dtype, copy=False)
    opt_sums_all = (flat @ opt_mask.T.astype(dtype)).astype(np.float64).reshape(k, c, n_splits)
    total = flat.astype(np.float64).sum(axis=1).reshape(k, c)
    out_idx = np.empty(n_splits, dtype=np.int64)
    out_cost = np.empty(n_splits)
    front_size = np.empty(n_splits, dtype=np.int64)
    n_rej = np.empty(n_splits, dtype=np.int64)
    for s in range(n_splits):
        front, _, _, _, _, rejected, idx, idx_cost = _one_split(
            table, cost, alpha, bound_list, delta, perms[s], n_opt, opt_sums_all[:, :, s], total)
        out_idx[s], out_cost[s] = idx, idx_cost
        front_size[s], n_rej[s] = front.size, int(rejected.sum())
    return ParetoSplits(certified_index=out_idx, certified_cost=out_cost, front_size=front_size,
                        n_rejected=n_rej)
