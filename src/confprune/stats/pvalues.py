"""Super-uniform p-values for the null H_j: R(λ_j) > α (method.md §3), vectorised over any shape.

Every function takes calibration statistics of shape ``(...)`` (typically ``(G, S)``: grid × splits)
and returns p-values of the same shape. None of them returns NaN: the edge cases R̂ = 0 and R̂ = 1
are handled exactly (a NaN p-value never rejects, which would be a silent loss of power).

References: Bates et al. (2021) "Distribution-free, risk-controlling prediction sets" (Hoeffding,
Bentkus, HB), Waudby-Smith & Ramdas (2020) "Estimating means of bounded random variables by
betting" (WSR), Angelopoulos et al. (2021) "Learn then Test" §3.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

try:  # the Boost ufunc behind scipy.stats.binom.cdf, without importing scipy.stats (~0.6 s per process)
    from scipy.special._ufuncs import _binom_cdf
except ImportError:  # pragma: no cover - a SciPy that moved it: fall back to the public API
    _binom_cdf = None

BoundName = Literal["binomial", "hoeffding", "bentkus", "hb", "wsr"]

# Tolerance for turning a fractional n·R̂ into a count (method.md §3: ⌈n·R̂ − 1e-9⌉).
_CEIL_EPS = 1e-9
# WSR works on blocks of about this many bytes per array, on this many threads.
_WSR_BLOCK_BYTES = 4 * 2**20
_WSR_THREADS = min(4, os.cpu_count() or 1)


def binom_cdf(k: np.ndarray, n: int, p: float) -> np.ndarray:
    """P(Binom(n, p) ≤ k) for integer-valued k, equal bit for bit to ``scipy.stats.binom.cdf``
    (a test holds the two equal): 0 for k < 0, 1 for k ≥ n."""
    k = np.asarray(k, dtype=np.float64)
    if _binom_cdf is None:  # pragma: no cover
        from scipy import stats

        return stats.binom.cdf(k, n, p)
    inside = _binom_cdf(np.clip(k, 0, n), float(n), float(p))
    return np.where(k < 0, 0.0, np.where(k >= n, 1.0, inside))


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")


def _check_n(n: int) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"calibration size n must be a positive integer, got {n!r}")


def _checked_unit(values: np.ndarray | float, name: str) -> np.ndarray:
    """``values`` as float64, refused when any is NaN or outside [0, 1] (a NaN p-value would never
    reject, silently; an out-of-range risk would give a meaningless one)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size and not (np.all(arr >= 0.0) and np.all(arr <= 1.0)):  # False for NaN too
        bad = float(arr[~((arr >= 0.0) & (arr <= 1.0))].ravel()[0])
        raise ValueError(f"{name} must lie in [0, 1] (no NaN); got {bad!r}")
    return arr


def h1(a: np.ndarray | float, b: float) -> np.ndarray:
    """Binary KL divergence h1(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b)), with 0·log 0 = 0.

    Parameters
    ----------
    a : array_like, values in [0, 1]
    b : float in (0, 1)
    """
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0) / b), 0.0)
        t2 = np.where(a < 1, (1 - a) * np.log(np.where(a < 1, 1 - a, 1.0) / (1 - b)), 0.0)
    return t1 + t2


def hoeffding_pvalue(risk: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Hoeffding p-value exp(−n·h1(min(R̂, α), α)); 1 when R̂ ≥ α, (1−α)^n when R̂ = 0.

    ``risk`` is the calibration mean loss, any shape, values in [0, 1].
    """
    _check_alpha(alpha)
    _check_n(n)
    r = np.minimum(_checked_unit(risk, "the calibration risk"), alpha)
    return np.exp(-n * h1(r, alpha))


def bentkus_pvalue(risk: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Bentkus p-value e·P(Binom(n, α) ≤ ⌈n·R̂⌉). Not clipped: it may exceed 1 (still valid)."""
    _check_alpha(alpha)
    _check_n(n)
    k = np.ceil(n * _checked_unit(risk, "the calibration risk") - _CEIL_EPS)
    return np.e * binom_cdf(k, n, alpha)


def hb_pvalue(risk: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Hoeffding–Bentkus p-value min(p_H, p_B); valid for any loss in [0, 1]."""
    return np.minimum(hoeffding_pvalue(risk, n, alpha), bentkus_pvalue(risk, n, alpha))


def binomial_pvalue(count: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Exact binomial p-value P(Binom(n, α) ≤ k) for binary losses.

    ``count`` is the integer number of calibration losses equal to 1. It must be an exact integer:
    deriving k from a float mean (as the paper's code does with a float32 accuracy) is
    anti-conservative for about half of all k at n = 9000.
    """
    _check_alpha(alpha)
    _check_n(n)
    count = np.asarray(count)
    if not np.issubdtype(count.dtype, np.integer):
        if not np.all(np.isfinite(count)):
            raise ValueError("binomial p-value needs integer loss counts; got NaN or infinite counts")
        rounded = np.rint(count)
        if np.any(np.abs(count - rounded) > 1e-6):
            raise ValueError(
                "binomial p-value needs integer loss counts (binary losses); got non-integer counts"
            )
        count = rounded.astype(np.int64)
    if np.any(count < 0) or np.any(count > n):
        raise ValueError(f"loss counts must lie in [0, n={n}]")
    return binom_cdf(count, n, alpha)


def wsr_pvalue(losses: np.ndarray, alpha: float, delta: float) -> np.ndarray:
    """Waudby-Smith–Ramdas betting p-value, computed along the last axis.

    Parameters
    ----------
    losses : array of shape (..., n), values in [0, 1]
        Calibration losses in a fixed random order that is independent of their values.
    alpha : float in (0, 1)
    delta : float in (0, 1), the error budget used in the betting fraction ν.

    Returns
    -------
    array of shape (...): min(1, 1 / max_i K_i(α)).

    Notes
    -----
    μ̂_i = (1/2 + Σ_{j≤i} L_j)/(i+1), σ̂²_i = (1/4 + Σ_{j≤i}(L_j − μ̂_j)²)/(i+1),
    ν_i = min(1, sqrt(2·log(1/δ)/(n·σ̂²_{i−1}))) with σ̂²_0 = 1/4, K_i = Π_{j≤i}(1 − ν_j(L_j − α)).
    Computed in log space; 1 − ν(L − α) ≥ α > 0, so the logarithm is always finite.
    """
    _check_alpha(alpha)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    x = _checked_unit(losses, "losses")
    if x.ndim < 1:
        raise ValueError("wsr_pvalue needs losses with a calibration axis (shape (..., n))")
    n = x.shape[-1]
    _check_n(n)
    lead = x.shape[:-1]
    rows = x.reshape(-1, n)
    out = np.empty(rows.shape[0])
    # Rows are independent: work on cache-sized blocks, in place, on a couple of threads
    # (NumPy ufuncs release the GIL), which keeps memory flat and is ~3x faster than one pass.
    block = max(1, _WSR_BLOCK_BYTES // (8 * n))
    starts = range(0, rows.shape[0], block)

    def work(start: int) -> None:
        stop = min(start + block, rows.shape[0])
        out[start:stop] = _wsr_rows(rows[start:stop], alpha, delta)

    if rows.shape[0] > block and _WSR_THREADS > 1:
        with ThreadPoolExecutor(_WSR_THREADS) as pool:
            list(pool.map(work, starts))
    else:
        for start in starts:
            work(start)
    return out.reshape(lead)


def _wsr_rows(x: np.ndarray, alpha: float, delta: float) -> np.ndarray:
    """WSR p-values for a (B, n) block; see :func:`wsr_pvalue`."""
    n = x.shape[1]
    denom = np.arange(2, n + 2, dtype=np.float64)  # i + 1 for i = 1..n
    work = np.cumsum(x, axis=1)
    work += 0.5
    work /= denom  # μ̂_i
    np.subtract(x, work, out=work)
    np.square(work, out=work)
    np.cumsum(work, axis=1, out=work)
    work += 0.25
    work /= denom  # σ̂²_i
    c = 2.0 * np.log(1.0 / delta) / n
    nu = np.empty_like(work)
    nu[:, 0] = c / 0.25  # σ̂²_0 = 1/4
    np.divide(c, work[:, :-1], out=nu[:, 1:])
    np.sqrt(nu, out=nu)
    np.minimum(nu, 1.0, out=nu)
    np.subtract(x, alpha, out=work)
    work *= nu
    np.negative(work, out=work)
    np.log1p(work, out=work)  # log(1 − ν_j (L_j − α)), finite since the argument is ≥ α > 0
    np.cumsum(work, axis=1, out=work)
    return np.minimum(1.0, np.exp(-work.max(axis=1)))


def pvalues_from_sums(
    bound: BoundName, loss_sums: np.ndarray, n: int, alpha: float
) -> np.ndarray:
    """p-values for the sum-based bounds from calibration loss sums (any shape); see
    :meth:`Bound.from_sums`. ``loss_sums`` are Σ_i L_i over the n calibration points."""
    return get_bound(bound).from_sums(loss_sums, n, alpha)


def pvalues_from_losses(bound: BoundName, losses: np.ndarray, alpha: float, delta: float) -> np.ndarray:
    """p-values from per-sample losses along the last axis (shape (..., n)) for any bound; see
    :meth:`Bound.from_losses`. A sequential bound (WSR) needs the last axis already in a random
    order independent of the data."""
    return get_bound(bound).from_losses(losses, alpha, delta)


# ----------------------------------------------------------------------------------------------
# The registry: every fact about a bound lives in its entry, and nowhere else.


def _risk_sums(fn: Callable[[np.ndarray, int, float], np.ndarray]) -> Callable[[np.ndarray, int, float], np.ndarray]:
    """A bound of the calibration mean, fed from loss sums (checked to lie in [0, n])."""

    def from_sums(sums: np.ndarray, n: int, alpha: float) -> np.ndarray:
        _check_n(n)
        risk = np.asarray(sums, dtype=np.float64) / n
        # Sums of n losses in [0, 1] lie in [0, n]: the clip absorbs float rounding, nothing more.
        if risk.size and not (np.all(risk >= -_CEIL_EPS) and np.all(risk <= 1.0 + _CEIL_EPS)):
            _checked_unit(risk, "loss sums / n")
        return fn(np.clip(risk, 0.0, 1.0), n, alpha)

    return from_sums


@dataclass(frozen=True)
class Bound:
    """One p-value bound for H: R > α, and everything the rest of the code asks about it.

    ``binary_only``: valid only for 0/1 losses (the exact binomial). ``sequential``: needs the
    ordered losses (a betting bound, WSR), not their sums; its order must be a random permutation
    fixed before seeing the data. ``from_sums(sums, n, α)`` (sum-based bounds) and
    ``from_losses(losses, α, δ)`` (every bound) return p-values of the leading shape.
    """

    name: str
    binary_only: bool
    sequential: bool
    summary: str
    sums: Callable[[np.ndarray, int, float], np.ndarray] | None = field(default=None, repr=False)

    def from_sums(self, loss_sums: np.ndarray, n: int, alpha: float) -> np.ndarray:
        if self.sums is None:
            raise ValueError(f"the {self.name} bound needs the ordered losses, not their sums: use wsr_pvalue")
        return self.sums(loss_sums, n, alpha)

    def from_losses(self, losses: np.ndarray, alpha: float, delta: float) -> np.ndarray:
        losses = np.asarray(losses)
        if self.sequential:
            return wsr_pvalue(losses, alpha, delta)
        return self.from_sums(losses.astype(np.float64).sum(axis=-1), losses.shape[-1], alpha)

    def check_table(self, losses: np.ndarray, what: str = "this loss table") -> None:
        """Refuse a table the bound is not valid for (fractional losses for a binary-only bound)."""
        if self.binary_only and not bool(np.all((np.asarray(losses) == 0) | (np.asarray(losses) == 1))):
            raise ValueError(f"bound={self.name!r} needs binary losses (every loss 0 or 1); {what} is not binary: "
                             "use bound=hb or bound=wsr, which are valid for any loss in [0, 1]")

    def min_pvalue(self, n: int, alpha: float, delta: float) -> float:
        """The smallest p-value reachable with n points (zero observed loss); 1 for n = 0. A risk can
        ever be certified only if this is ≤ δ."""
        if n == 0:
            return 1.0
        if self.sequential:
            return float(wsr_pvalue(np.zeros(int(n)), alpha, delta))
        return float(self.from_sums(np.zeros(1), int(n), alpha)[0])


BOUND_REGISTRY: dict[str, Bound] = {
    "binomial": Bound("binomial", True, False, "exact binomial tail of the integer error count",
                      lambda sums, n, alpha: binomial_pvalue(sums, n, alpha)),
    "hoeffding": Bound("hoeffding", False, False, "Hoeffding's KL bound", _risk_sums(hoeffding_pvalue)),
    "bentkus": Bound("bentkus", False, False, "Bentkus' binomial-tail bound", _risk_sums(bentkus_pvalue)),
    "hb": Bound("hb", False, False, "the smaller of Hoeffding and Bentkus", _risk_sums(hb_pvalue)),
    "wsr": Bound("wsr", False, True, "Waudby-Smith–Ramdas betting (variance-adaptive)"),
}
BOUNDS: tuple[str, ...] = tuple(BOUND_REGISTRY)
#: bounds valid only for losses in {0, 1} (derived from the registry)
BINARY_ONLY: frozenset[str] = frozenset(b for b, e in BOUND_REGISTRY.items() if e.binary_only)
#: bounds that need the individual ordered losses, not only their sum (derived from the registry)
NEEDS_SEQUENCE: frozenset[str] = frozenset(b for b, e in BOUND_REGISTRY.items() if e.sequential)


def get_bound(name: str) -> Bound:
    """The registered bound called ``name``; a ValueError lists the allowed names."""
    try:
        return BOUND_REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown bound {name!r}; allowed: {', '.join(BOUND_REGISTRY)}") from None


def resolve_bound(name: str, losses: np.ndarray) -> str:
    """``"auto"`` resolved on a loss table — the exact binomial for 0/1 losses, else hb (the one
    place this rule is written) — and any bound checked against the table."""
    if name == "auto":
        binary = bool(np.all((np.asarray(losses) == 0) | (np.asarray(losses) == 1)))
        name = "binomial" if binary else "hb"
    get_bound(name).check_table(losses)
    return name


def max_certified_count(bound: BoundName, n: int, alpha: float, delta: float) -> int:
    """Largest number of calibration errors (binary losses) whose p-value is still ≤ δ; −1 if none.

    Useful as a sanity table (method.md §3) and in certificates.
    """
    if get_bound(bound).sequential:
        raise ValueError(f"max_certified_count supports sum-based bounds, not {bound!r}")
    counts = np.arange(n + 1)
    p = pvalues_from_sums(bound, counts, n, alpha)
    ok = np.flatnonzero(p <= delta)
    # p is non-decreasing in the count, so the certified counts form a prefix.
    return int(ok[-1]) if ok.size else -1
