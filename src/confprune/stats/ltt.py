"""Learn-Then-Test on a cached per-sample loss table, for one calibration set or many random splits.

The loss table ``L`` has shape (G, N): grid points λ_1 < … < λ_G by evaluation-pool points. The
network never runs here: every split, bound and FWER procedure is a few vectorised operations on
``L`` (method.md §5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import betaincinv  # = scipy.stats.beta.ppf, without importing scipy.stats

from .fwer import NOT_CERTIFIED, FwerProcedure, certified_index, make_fwer
from .pvalues import get_bound, pvalues_from_losses, pvalues_from_sums, wsr_pvalue

# Upper bound on the float64 working set of one WSR chunk (several arrays of this size coexist).
_WSR_CHUNK_BYTES = 96 * 2**20


def check_loss_table(losses: np.ndarray, name: str = "losses") -> np.ndarray:
    """Validate a (G, N) loss table: finite, in [0, 1]. Returns it as a float array."""
    arr = np.asarray(losses)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (G, N) = (grid, points), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must lie in [0, 1]; found values in [{lo:g}, {hi:g}]")
    return arr


def is_binary(losses: np.ndarray) -> bool:
    """True when every loss is exactly 0 or 1 (so the binomial p-value applies)."""
    arr = np.asarray(losses)
    return bool(np.all((arr == 0) | (arr == 1)))


def check_bound_for_table(bound: str, losses: np.ndarray) -> None:
    """A registered bound that is valid for this table (see :class:`~.pvalues.Bound`)."""
    get_bound(bound).check_table(losses)


@dataclass(frozen=True)
class Splits:
    """S random calibration/test splits of a pool of N points, as boolean membership masks.

    ``cal_mask`` and ``test_mask`` have shape (S, N) and never overlap. ``cal_order`` gives, per
    split, the calibration indices in a uniformly random order (independent of the data), used by
    sequential bounds (WSR); it is drawn lazily from ``order_seed``.
    """

    cal_mask: np.ndarray  # (S, N) bool, or uint16 multiplicities for i.i.d. (with replacement) draws
    test_mask: np.ndarray
    order_seed: np.random.SeedSequence
    orders: np.ndarray | None = None  # (S, n_cal) calibration indices in draw order, when drawn i.i.d.

    @property
    def n_splits(self) -> int:
        return self.cal_mask.shape[0]

    @property
    def n_cal(self) -> int:
        return int(self.cal_mask[0].sum())

    @property
    def n_test(self) -> int:
        return int(self.test_mask[0].sum())

    def cal_indices(self, s: int) -> np.ndarray:
        return np.flatnonzero(self.cal_mask[s])

    def test_indices(self, s: int) -> np.ndarray:
        return np.flatnonzero(self.test_mask[s])

    def cal_order(self, splits: slice | None = None) -> np.ndarray:
        """Calibration indices in random order, shape (S', n_cal), for the given split slice."""
        sl = splits if splits is not None else slice(None)
        if self.orders is not None:
            return self.orders[sl]
        ids = np.arange(self.n_splits)[sl]
        out = np.empty((len(ids), self.n_cal), dtype=np.int64)
        for row, s in enumerate(ids):
            # One child seed per split: the order of split s does not depend on the chunking.
            seq = np.random.SeedSequence(self.order_seed.entropy, spawn_key=(*self.order_seed.spawn_key, int(s)))
            out[row] = np.random.default_rng(seq).permutation(self.cal_indices(s))
        return out


def _subset_masks(rng: np.random.Generator, n_pool: int, size: int, n_splits: int) -> np.ndarray:
    """(S, N) masks, each with a uniform random subset of ``size`` points (Floyd sampling)."""
    mask = np.zeros((n_splits, n_pool), dtype=bool)
    if size == 0:
        return mask
    idx = np.stack([rng.choice(n_pool, size, replace=False, shuffle=False) for _ in range(n_splits)])
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


def draw_splits(n_pool: int, n_cal: int, n_test: int, n_splits: int, seed: int) -> Splits:
    """Draw reproducible random calibration/test splits.

    For each split: the test set is a uniform random subset of size ``n_test``; the calibration set
    a uniform random subset of size ``n_cal`` of the remaining points (all of them when
    n_cal + n_test = N). Same seed → same splits, whatever bound or procedure uses them.
    """
    for key, val in (("n_pool", n_pool), ("n_cal", n_cal), ("n_test", n_test), ("n_splits", n_splits)):
        if int(val) != val or val < 0:
            raise ValueError(f"{key} must be a non-negative integer, got {val!r}")
    if n_cal < 1 or n_splits < 1:
        raise ValueError(f"n_cal and n_splits must be ≥ 1, got n_cal={n_cal}, n_splits={n_splits}")
    if n_cal + n_test > n_pool:
        raise ValueError(
            f"n_cal + n_test = {n_cal} + {n_test} = {n_cal + n_test} exceeds the pool size {n_pool}"
        )
    root = np.random.SeedSequence(seed)
    split_seq, order_seq = root.spawn(2)
    rng = np.random.default_rng(split_seq)
    test_mask = _subset_masks(rng, n_pool, n_test, n_splits)
    rest = n_pool - n_test
    if n_cal == rest:
        cal_mask = ~test_mask
    else:
        # Draw the smaller of (calibration, unused) among the remaining points.
        pick_cal = n_cal <= rest - n_cal
        m = n_cal if pick_cal else rest - n_cal
        cal_mask = np.zeros_like(test_mask)
        for s in range(n_splits):
            remaining = np.flatnonzero(~test_mask[s])
            chosen = remaining[rng.choice(rest, m, replace=False, shuffle=False)]
            if pick_cal:
                cal_mask[s, chosen] = True
            else:
                cal_mask[s, remaining] = True
                cal_mask[s, chosen] = False
    return Splits(cal_mask=cal_mask, test_mask=test_mask, order_seed=order_seq)


def draw_iid_calibration(n_pool: int, n_cal: int, n_reps: int, seed: int) -> Splits:
    """Calibration sets drawn i.i.d. (with replacement) from the pool's empirical distribution.

    Under these draws the pool is the population: the true risk at λ is exactly the pool mean of
    the loss table's row, so P(r(λ̂) > α) ≤ δ can be checked on real losses without any test-set
    noise (see :func:`iid_validation`).
    """
    if n_pool < 1 or n_cal < 1 or n_reps < 1:
        raise ValueError(f"need n_pool, n_cal, n_reps ≥ 1; got {n_pool}, {n_cal}, {n_reps}")
    root = np.random.SeedSequence([int(seed), 0x11D])
    rng = np.random.default_rng(root)
    orders = rng.integers(0, n_pool, size=(n_reps, n_cal))
    counts = np.stack([np.bincount(row, minlength=n_pool) for row in orders]).astype(np.uint16)
    return Splits(cal_mask=counts, test_mask=np.zeros((n_reps, n_pool), dtype=bool), order_seed=root, orders=orders)


@dataclass
class IidValidation:
    """LTT on i.i.d. calibration draws from the pool, scored against the exact pool risk."""

    lambda_index: np.ndarray  # (R,)
    violated: np.ndarray  # (R,) certified and r(λ̂) > α, with r the pool risk (the true risk here)
    alpha: float
    delta: float

    @property
    def coverage(self) -> float:
        return float(1.0 - self.violated.mean())

    def coverage_interval(self, confidence: float = 0.95) -> tuple[float, float]:
        return clopper_pearson(int((~self.violated).sum()), len(self.violated), confidence)


def iid_validation(
    losses: np.ndarray, *, n_cal: int, n_reps: int, alpha: float, delta: float, bound: str,
    fwer: FwerProcedure | str = "fixed_sequence", seed: int = 0, n_grid: int | None = None,
    draws: Splits | None = None,
) -> IidValidation:
    """Exact validity check on a real loss table (method.md §5's known truth, from real data).
    ``n_grid``: the planned grid size when the table holds only a prefix (see :func:`reject_on_grid`);
    ``draws``: the i.i.d. calibration draws, if already made (else drawn from ``seed``)."""
    losses = check_loss_table(losses)
    procedure = make_fwer(fwer)
    if draws is None:
        draws = draw_iid_calibration(losses.shape[1], n_cal, n_reps, seed)
    p, _ = split_pvalues(losses, draws, alpha=alpha, delta=delta, bound=bound)
    idx = certified_index(reject_on_grid(procedure, p, delta, n_grid))
    true_risk = losses.astype(np.float64).mean(axis=1)
    violated = (idx != NOT_CERTIFIED) & (true_risk[np.maximum(idx, 0)] > alpha)
    return IidValidation(lambda_index=idx, violated=violated, alpha=alpha, delta=delta)


def reject_on_grid(procedure: FwerProcedure, p: np.ndarray, delta: float, n_grid: int | None = None) -> np.ndarray:
    """Rejections of the evaluated rows ``p`` (shape (G', ...)) as part of the planned grid of
    ``n_grid`` ≥ G' points (None: G'). Rows never evaluated (an early-stopped sweep) count as
    p = 1, so Bonferroni divides by the planned grid size and multi-start chains start where the
    planned grid puts them, whatever was evaluated."""
    g = p.shape[0]
    if n_grid is None or n_grid == g:
        return procedure.reject(p, delta)
    if n_grid < g:
        raise ValueError(f"n_grid={n_grid} is smaller than the {g} evaluated grid points")
    padded = np.concatenate([p, np.ones((n_grid - g, *p.shape[1:]))])
    return procedure.reject(padded, delta)[:g]


def check_splits_fit(losses: np.ndarray, splits: Splits) -> None:
    """The splits must have been drawn for a pool the size of the loss table's."""
    if splits.cal_mask.shape[1] != losses.shape[1]:
        raise ValueError(
            f"splits were drawn for a pool of {splits.cal_mask.shape[1]} points, "
            f"but the loss table has {losses.shape[1]}"
        )


def _cal_sums(losses: np.ndarray, mask: np.ndarray, binary: bool) -> np.ndarray:
    """Σ over each split's calibration points: (G, N) @ (N, S) → (G, S)."""
    # float32 sums of 0/1 values are exact up to 2^24 points; fractional losses use float64.
    dtype = np.float32 if binary and losses.shape[1] < 2**24 else np.float64
    return losses.astype(dtype, copy=False) @ mask.T.astype(dtype)


def split_pvalues(
    losses: np.ndarray,
    splits: Splits,
    *,
    alpha: float,
    delta: float,
    bound: str,
    binary: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """p-values (G, S) and calibration risks (G, S) for every grid point and split."""
    losses = check_loss_table(losses)
    check_bound_for_table(bound, losses)
    binary = is_binary(losses) if binary is None else binary
    n = splits.n_cal
    sums = _cal_sums(losses, splits.cal_mask, binary)
    cal_risk = sums.astype(np.float64) / n
    if get_bound(bound).sequential:
        g = losses.shape[0]
        chunk = max(1, int(_WSR_CHUNK_BYTES // (8 * g * n)))
        p = np.empty((g, splits.n_splits))
        for start in range(0, splits.n_splits, chunk):
            sl = slice(start, min(start + chunk, splits.n_splits))
            order = splits.cal_order(sl)  # (c, n)
            x = losses[:, order]  # (G, c, n)
            p[:, sl] = wsr_pvalue(x, alpha, delta)
    else:
        p = pvalues_from_sums(bound, sums, n, alpha)  # type: ignore[arg-type]
    return p, cal_risk


@dataclass
class SplitValidation:
    """LTT run over S random splits (one row per split in ``splits.csv``)."""

    lambda_index: np.ndarray  # (S,) int, NOT_CERTIFIED (−1) when nothing was certified
    certified: np.ndarray  # (S,) bool
    cal_risk: np.ndarray  # (S,) calibration risk at λ̂ (NaN when not certified)
    test_risk: np.ndarray  # (S,) test risk at λ̂ (NaN when not certified)
    violated: np.ndarray  # (S,) bool: certified and test risk > α
    alpha: float
    delta: float
    n_cal: int
    n_test: int
    p_values: np.ndarray | None = field(default=None, repr=False)  # (G, S)
    cal_risk_table: np.ndarray | None = field(default=None, repr=False)  # (G, S)

    @property
    def n_splits(self) -> int:
        return int(self.lambda_index.shape[0])

    @property
    def coverage(self) -> float | None:
        """Fraction of splits whose test risk at λ̂ is ≤ α (an uncertified split makes no claim);
        None (undefined) without test points."""
        return float(1.0 - self.violated.mean()) if self.n_test > 0 else None

    def coverage_interval(self, confidence: float = 0.95) -> tuple[float, float] | None:
        """Clopper–Pearson interval of :attr:`coverage`; None without test points."""
        if self.n_test == 0:
            return None
        return clopper_pearson(int((~self.violated).sum()), self.n_splits, confidence)


def validate_splits(
    losses: np.ndarray,
    splits: Splits,
    *,
    alpha: float,
    delta: float,
    bound: str,
    fwer: FwerProcedure | str = "fixed_sequence",
    keep_pvalues: bool = False,
    n_grid: int | None = None,
) -> SplitValidation:
    """Run LTT on each split's calibration rows and measure the test risk at the certified λ̂.
    ``n_grid``: the planned grid size when the table holds only a prefix (see :func:`reject_on_grid`)."""
    losses = check_loss_table(losses)
    check_splits_fit(losses, splits)
    procedure = make_fwer(fwer)
    p, cal_risk_table = split_pvalues(losses, splits, alpha=alpha, delta=delta, bound=bound)
    idx = certified_index(reject_on_grid(procedure, p, delta, n_grid))
    certified = idx != NOT_CERTIFIED
    safe = np.where(certified, idx, 0)
    cols = np.arange(splits.n_splits)
    cal_risk = np.where(certified, cal_risk_table[safe, cols], np.nan)
    # Test risk at λ̂: one row of L per split, averaged over that split's test points.
    if splits.n_test > 0:
        test_sums = np.einsum("sn,sn->s", losses[safe].astype(np.float64), splits.test_mask)
        test_risk = np.where(certified, test_sums / splits.n_test, np.nan)
    else:
        test_risk = np.full(splits.n_splits, np.nan)
    violated = certified & (np.nan_to_num(test_risk, nan=0.0) > alpha)
    return SplitValidation(
        lambda_index=idx,
        certified=certified,
        cal_risk=cal_risk,
        test_risk=test_risk,
        violated=violated,
        alpha=alpha,
        delta=delta,
        n_cal=splits.n_cal,
        n_test=splits.n_test,
        p_values=p if keep_pvalues else None,
        cal_risk_table=cal_risk_table if keep_pvalues else None,
    )


@dataclass
class Calibration:
    """LTT on one calibration set: the deployable result."""

    lambda_index: int  # NOT_CERTIFIED (−1) when nothing was certified
    p_values: np.ndarray  # (G,)
    rejected: np.ndarray  # (G,) bool
    risk: np.ndarray  # (G,) calibration mean loss per grid point
    n: int
    alpha: float
    delta: float
    bound: str
    fwer: str

    @property
    def certified(self) -> bool:
        return self.lambda_index != NOT_CERTIFIED


def calibrate(
    cal_losses: np.ndarray,
    *,
    alpha: float,
    delta: float,
    bound: str,
    fwer: FwerProcedure | str = "fixed_sequence",
    order_seed: int | None = 0,
    n_grid: int | None = None,
) -> Calibration:
    """LTT on a single calibration loss table of shape (G', n): the evaluated rows of a grid
    planned with ``n_grid`` ≥ G' points (None: G'; see :func:`reject_on_grid`).

    For sequential bounds (WSR) the calibration points are taken in a random order drawn from
    ``order_seed`` (fixed before seeing the data); ``order_seed=None`` keeps the given column
    order, for callers whose columns are already in a random order.
    """
    cal_losses = check_loss_table(cal_losses, "calibration losses")
    check_bound_for_table(bound, cal_losses)
    procedure = make_fwer(fwer)
    g, n = cal_losses.shape
    sums = cal_losses.astype(np.float64).sum(axis=1)
    if get_bound(bound).sequential and order_seed is not None:
        cal_losses = cal_losses[:, np.random.default_rng(order_seed).permutation(n)]
    p = pvalues_from_losses(bound, cal_losses, alpha, delta)  # type: ignore[arg-type]
    rejected = reject_on_grid(procedure, np.asarray(p, dtype=np.float64), delta, n_grid)
    return Calibration(
        lambda_index=int(certified_index(rejected)),
        p_values=np.asarray(p, dtype=np.float64),
        rejected=np.asarray(rejected),
        risk=sums / n,
        n=n,
        alpha=alpha,
        delta=delta,
        bound=bound,
        fwer=procedure.name,
    )


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided Clopper–Pearson interval for a binomial proportion k/n."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 ≤ k ≤ n and n ≥ 1, got k={k}, n={n}")
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, a / 2))
    hi = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1 - a / 2))
    return lo, hi
