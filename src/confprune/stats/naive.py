"""What an uncertified choice of λ risks: the naive plug-in rule and the oracle, over many splits.

The **naive plug-in** choice is what practitioners do without a certificate: prune as far as the
calibration (validation) risk allows, λ̂_naive = the largest grid λ whose calibration mean loss is
≤ α. The **oracle** is the choice a known population risk would allow: the largest grid λ whose
risk at every λ' ≤ λ is ≤ α (the prefix the fixed-sequence procedure could at best reject).

Conventions follow :mod:`confprune.stats.ltt`: the loss table ``losses`` has shape (G, N) (grid
points by pool points), random calibration sets are :class:`~confprune.stats.ltt.Splits` masks of
shape (S, N) (boolean subsets, or uint16 multiplicities for i.i.d. draws), and every split is a
column of a (G, S) matrix product — never a loop over splits. "True risk" is the pool mean of a
row: exact for i.i.d. draws from the pool (:func:`~confprune.stats.ltt.draw_iid_calibration`), the
pool standing in for the population for subset splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fwer import NOT_CERTIFIED
from .ltt import Splits, _cal_sums, check_loss_table, check_splits_fit, is_binary

# k/n is compared with α in floating point: k/n = α exactly (e.g. 90/9000 vs 0.01) must count as
# "≤ α" whatever the rounding of the division.
_RISK_TOLERANCE = 1e-12


def _pool_risk(losses: np.ndarray) -> np.ndarray:
    """(G,) pool mean loss per grid point: the true risk for i.i.d. draws from the pool."""
    return check_loss_table(losses).astype(np.float64).mean(axis=1)


def calibration_risks(losses: np.ndarray, splits: Splits) -> np.ndarray:
    """Calibration mean loss of every grid point on every split.

    Parameters
    ----------
    losses : ndarray of shape (G, N)
        Per-sample losses in [0, 1] over the pool.
    splits : Splits
        ``cal_mask`` of shape (S, N): boolean subsets or i.i.d. multiplicities.

    Returns
    -------
    ndarray of shape (G, S)
        Σ_i m_si L_gi / n_cal, with m_si the multiplicity of point i in calibration set s.
    """
    losses = check_loss_table(losses)
    check_splits_fit(losses, splits)
    # The matrix product LTT's split validation uses (exact sums: float32 only for 0/1 losses).
    return _cal_sums(losses, splits.cal_mask, is_binary(losses)).astype(np.float64) / splits.n_cal


def naive_index(cal_risk: np.ndarray, alpha: float) -> np.ndarray:
    """The naive plug-in choice per split: the largest grid index whose calibration risk is ≤ α.

    Parameters
    ----------
    cal_risk : ndarray of shape (G, S) or (G,)
        Calibration mean loss per grid point (and split).
    alpha : float
        Risk tolerance.

    Returns
    -------
    ndarray of shape (S,) (or a 0-d array for a (G,) input), int
        The chosen grid index, ``NOT_CERTIFIED`` (−1) where no grid point has calibration risk ≤ α
        (the practitioner would then not prune, and the rule makes no claim; **ours**). The whole
        grid is scanned, not only its prefix: a noisy risk curve that dips back under α after a
        crossing is followed to the dip, as "the largest λ that passes" reads.
    """
    risk = np.asarray(cal_risk, dtype=np.float64)
    passes = risk <= alpha + _RISK_TOLERANCE
    g = risk.shape[0]
    last = g - 1 - np.argmax(passes[::-1], axis=0)
    return np.where(passes.any(axis=0), last, NOT_CERTIFIED)


def oracle_index(losses: np.ndarray, alpha: float) -> int:
    """The oracle choice: the largest grid index g whose true (pool) risk at every g' ≤ g is ≤ α.

    Parameters
    ----------
    losses : ndarray of shape (G, N)
        Per-sample losses over the pool; the pool mean of a row is taken as the true risk.
    alpha : float
        Risk tolerance.

    Returns
    -------
    int
        The oracle grid index, ``NOT_CERTIFIED`` (−1) when the risk at the first grid point (the
        dense model) already exceeds α.
    """
    pool_risk = _pool_risk(losses)
    passes = pool_risk <= alpha + _RISK_TOLERANCE
    prefix = int(np.cumprod(passes).sum())  # length of the leading run of passing grid points
    return prefix - 1 if prefix else NOT_CERTIFIED


def heldout_exceeds(losses: np.ndarray, splits: Splits, lambda_index: np.ndarray, alpha: float) -> np.ndarray:
    """Whether the risk on each split's held-out test points at its chosen grid index exceeds α.

    Parameters
    ----------
    losses : ndarray of shape (G, N)
    splits : Splits with ``test_mask`` of shape (S, N) (points disjoint from the calibration set)
    lambda_index : ndarray of shape (S,), int; ``NOT_CERTIFIED`` (−1) is never a violation
    alpha : float

    Returns
    -------
    ndarray of shape (S,), bool

    Notes
    -----
    Unlike the pool risk, which on a split shares 90% of its points with that split's own
    calibration set (and so agrees with it), the held-out risk is independent of the choice given
    the pool: a rule that stops where the calibration risk touches α violates here about as often
    as the truth says. It is noisy (n_test points), so a *valid* rule's rate here is not bounded by
    δ either: a choice whose true risk sits just under α exceeds α on a finite test set often.
    """
    losses = check_loss_table(losses)
    check_splits_fit(losses, splits)
    if splits.n_test == 0:
        raise ValueError("the splits have no held-out test points")
    idx = np.asarray(lambda_index)
    chosen = idx != NOT_CERTIFIED
    sums = _cal_sums(losses, splits.test_mask, is_binary(losses)).astype(np.float64)  # (G, S)
    risk = sums[np.where(chosen, idx, 0), np.arange(idx.shape[0])] / splits.n_test
    return chosen & (risk > alpha + _RISK_TOLERANCE)


def risk_exceeds(losses: np.ndarray, lambda_index: np.ndarray, alpha: float) -> np.ndarray:
    """Whether the true (pool) risk at each chosen grid index exceeds α.

    Parameters
    ----------
    losses : ndarray of shape (G, N)
    lambda_index : ndarray of shape (S,), int
        A chosen grid index per split, ``NOT_CERTIFIED`` (−1) for no choice (never a violation).
    alpha : float

    Returns
    -------
    ndarray of shape (S,), bool
    """
    pool_risk = _pool_risk(losses)
    idx = np.asarray(lambda_index)
    chosen = idx != NOT_CERTIFIED
    return chosen & (pool_risk[np.where(chosen, idx, 0)] > alpha)


@dataclass
class NaiveChoice:
    """The naive plug-in choice on S calibration sets, scored against the pool risk."""

    lambda_index: np.ndarray  # (S,) int, NOT_CERTIFIED (−1) where no λ has calibration risk ≤ α
    cal_risk: np.ndarray  # (S,) calibration risk at the chosen λ (NaN where none)
    true_risk: np.ndarray  # (S,) pool risk at the chosen λ (NaN where none)
    violated: np.ndarray  # (S,) bool: a λ was chosen and its pool risk exceeds α
    alpha: float

    @property
    def chosen(self) -> np.ndarray:
        """(S,) bool: some grid point had calibration risk ≤ α."""
        return self.lambda_index != NOT_CERTIFIED

    @property
    def violation_rate(self) -> float:
        """Fraction of calibration sets whose chosen λ has pool risk > α (no choice: no violation)."""
        return float(self.violated.mean())


def naive_choice(losses: np.ndarray, splits: Splits, *, alpha: float) -> NaiveChoice:
    """The naive plug-in λ on every calibration set of ``splits`` and whether it violates α.

    Parameters
    ----------
    losses : ndarray of shape (G, N)
        Per-sample losses over the pool.
    splits : Splits
        S calibration sets (``cal_mask`` of shape (S, N)); their test sets are not used.
    alpha : float
        Risk tolerance.

    Returns
    -------
    NaiveChoice
        Arrays of shape (S,). Under i.i.d. draws from the pool, ``violation_rate`` estimates
        P(R(λ̂_naive) > α) exactly (the pool risk is the true risk); LTT keeps the same quantity ≤ δ.
    """
    losses = check_loss_table(losses)
    risk_table = calibration_risks(losses, splits)  # (G, S)
    idx = naive_index(risk_table, alpha)
    chosen = idx != NOT_CERTIFIED
    at = np.where(chosen, idx, 0)
    pool_risk = _pool_risk(losses)
    cols = np.arange(idx.shape[0])
    return NaiveChoice(
        lambda_index=idx,
        cal_risk=np.where(chosen, risk_table[at, cols], np.nan),
        true_risk=np.where(chosen, pool_risk[at], np.nan),
        violated=risk_exceeds(losses, idx, alpha),
        alpha=float(alpha),
    )


__all__ = ["NaiveChoice", "calibration_risks", "heldout_exceeds", "naive_choice", "naive_index", "oracle_index",
           "risk_exceeds"]
