"""Certifying several risks at once (e.g. label error and disagreement, or one risk per class).

A configuration λ passes only when *every* risk k is certified: R_k(λ) ≤ α_k for all k. Its null
is the union ∪_k {R_k(λ) > α_k}, tested by the intersection–union test (Berger 1982): the combined
p-value max_k p_k(λ) is super-uniform without any multiplicity correction, because under the null
some k has R_k > α_k and P(max_j p_j ≤ u) ≤ P(p_k ≤ u) ≤ u. The combined p-values of shape (G,) or
(G, S) then go to any FWER procedure of :mod:`confprune.stats.fwer` at level δ.

Per-class risks R_c(λ) = E[L(λ) | Y = c] are the special case "one risk per class", each estimated
on the n_c calibration points with label c (see :func:`per_class_pvalues`).
NumPy/SciPy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .pvalues import get_bound, pvalues_from_losses


def combine_max(p: np.ndarray) -> np.ndarray:
    """Intersection–union p-value: max over the first (risk) axis.

    Parameters
    ----------
    p : array of shape (K, ...), e.g. (K, G) or (K, G, S): one p-value table per risk

    Returns
    -------
    array of shape (...): super-uniform whenever at least one risk's null holds.
    """
    p = np.asarray(p, dtype=np.float64)
    if p.ndim < 1 or p.shape[0] < 1:
        raise ValueError(f"p-values must have a non-empty leading risk axis, got shape {p.shape}")
    if np.isnan(p).any():
        raise ValueError("p-values contain NaN (a NaN never rejects; fix the p-value computation)")
    return p.max(axis=0)


def min_achievable_pvalue(bound: str, n: int, alpha: float, delta: float) -> float:
    """The smallest p-value ``bound`` can return on n points: its value at zero observed loss.

    binomial, hoeffding, hb: (1−α)^n; bentkus: e·(1−α)^n; wsr: the betting p-value of n zeros.
    A risk can ever be certified only if this is ≤ δ. n = 0 gives 1. (:meth:`Bound.min_pvalue`.)
    """
    return get_bound(bound).min_pvalue(n, alpha, delta)


def _as_per_risk(value: object, k: int, name: str) -> list:
    if isinstance(value, str) or np.ndim(value) == 0:
        return [value] * k
    out = list(value)  # type: ignore[call-overload]
    if len(out) != k:
        raise ValueError(f"{name} must be one value or {k} values (one per risk), got {len(out)}")
    return out


def _check_losses(losses: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(losses)
    if arr.ndim < 1 or arr.shape[-1] < 1:
        raise ValueError(f"{name} needs a non-empty last (calibration) axis, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"{name} must lie in [0, 1]")
    return arr


def _bound_pvalues(bound: str, losses: np.ndarray, alpha: float, delta: float, name: str,
                   order: np.ndarray | None) -> np.ndarray:
    entry = get_bound(bound)
    entry.check_table(losses, name)
    if entry.sequential and order is not None:
        losses = losses[..., order]
    return np.asarray(pvalues_from_losses(bound, losses, alpha, delta), dtype=np.float64)  # type: ignore[arg-type]


def risk_pvalues(
    loss_tables: Sequence[np.ndarray],
    alphas: float | Sequence[float],
    delta: float,
    bounds: str | Sequence[str] = "hb",
    *,
    order_seed: int | None = 0,
) -> np.ndarray:
    """Per-risk p-value tables for K risks on the same calibration points.

    Parameters
    ----------
    loss_tables : K arrays, each of shape (..., n) (e.g. (G, n)), values in [0, 1]
        Risk k's per-sample losses; the last axis indexes the same n calibration points for all k.
    alphas : one α or K values α_k in (0, 1)
    delta : float in (0, 1) (used by WSR's betting fraction)
    bounds : one bound name or K names (``binomial`` needs binary losses)
    order_seed : int or None
        WSR needs a data-independent random order of the calibration points: one permutation drawn
        from this seed is applied to every risk; ``None`` keeps the given order.

    Returns
    -------
    p : array of shape (K, ...); combine with :func:`combine_max`.
    """
    tables = [_check_losses(t, f"loss table {k}") for k, t in enumerate(loss_tables)]
    if not tables:
        raise ValueError("need at least one loss table")
    shape = tables[0].shape
    for k, t in enumerate(tables):
        if t.shape != shape:
            raise ValueError(f"loss table {k} has shape {t.shape}, expected {shape} like table 0")
    k_risks = len(tables)
    alpha_list = [float(a) for a in _as_per_risk(alphas, k_risks, "alphas")]
    bound_list = [str(b) for b in _as_per_risk(bounds, k_risks, "bounds")]
    n = shape[-1]
    order = np.random.default_rng(order_seed).permutation(n) if order_seed is not None else None
    return np.stack([
        _bound_pvalues(b, t, a, delta, f"loss table {k}", order)
        for k, (t, a, b) in enumerate(zip(tables, alpha_list, bound_list, strict=True))
    ])


@dataclass(frozen=True)
class PerClassRisk:
    """Per-class risk certificates' inputs, one row per class.

    Attributes
    ----------
    classes : (C,) class labels, in the row order below
    n_per_class : (C,) int, n_c = calibration points with that label
    alpha_per_class : (C,) float, α_c
    risk : (C, G) float, calibration mean loss per class and grid point (NaN when n_c = 0)
    p_values : (C, G) float, each computed on that class's n_c points (1 when n_c = 0)
    min_pvalue : (C,) float, the smallest p-value reachable with n_c points (zero observed loss)
    can_certify : (C,) bool, min_pvalue ≤ δ: otherwise no λ can ever pass for this class, so the
        combined test can never certify anything (collect more points of that class or raise α_c)
    bound : str
    delta : float
    """

    classes: np.ndarray
    n_per_class: np.ndarray
    alpha_per_class: np.ndarray
    risk: np.ndarray
    p_values: np.ndarray
    min_pvalue: np.ndarray
    can_certify: np.ndarray
    bound: str
    delta: float

    @property
    def combined(self) -> np.ndarray:
        """(G,) intersection–union p-value over classes: feed it to a FWER procedure."""
        return combine_max(self.p_values)


def per_class_pvalues(
    losses: np.ndarray,
    labels: np.ndarray,
    alpha: float | Sequence[float] | Mapping[object, float],
    delta: float,
    bound: str = "binomial",
    *,
    classes: Sequence[object] | np.ndarray | None = None,
    order_seed: int | None = 0,
) -> PerClassRisk:
    """p-values for every class's risk R_c(λ) = E[L(λ) | Y = c] ≤ α_c.

    Parameters
    ----------
    losses : array of shape (G, n), values in [0, 1]: per-sample losses over the λ grid
    labels : array of shape (n,): the calibration points' labels
    alpha : one α for every class, a sequence aligned with ``classes``, or a mapping class → α_c
    delta : float in (0, 1)
    bound : p-value bound (``binomial`` needs binary losses)
    classes : the classes to certify (default: the sorted distinct labels). A class absent from
        the calibration set gets n_c = 0, p = 1 and can_certify = False: a class the user asked
        for is never silently dropped.
    order_seed : int or None, WSR only: the random order of each class's points (one global
        permutation, restricted to the class).

    Notes
    -----
    Validity is conditional on the labels. Given y_1..y_n, the calibration points with y_i = c are
    n_c i.i.d. draws from the class-conditional law P(x | Y = c) (exchangeable data: the labels
    only select which draws land in the class), so class c's p-value is super-uniform conditionally
    on the labels, with n_c fixed; hence also unconditionally. Classes with few points have weak
    p-values: the result reports n_c and whether certification is possible at all.
    """
    table = _check_losses(losses, "losses")
    if table.ndim != 2:
        raise ValueError(f"losses must have shape (G, n), got {table.shape}")
    labels = np.asarray(labels)
    if labels.shape != (table.shape[1],):
        raise ValueError(f"labels must have shape (n,) = ({table.shape[1]},), got {labels.shape}")
    class_list = np.unique(labels) if classes is None else np.asarray(classes)
    if isinstance(alpha, Mapping):
        missing = [c for c in class_list.tolist() if c not in alpha]
        if missing:
            raise ValueError(f"alpha mapping lacks classes {missing}")
        alphas = np.array([float(alpha[c]) for c in class_list.tolist()])
    elif np.ndim(alpha) == 0:
        alphas = np.full(class_list.size, float(alpha))  # type: ignore[arg-type]
    else:
        alphas = np.asarray(alpha, dtype=np.float64)
        if alphas.shape != (class_list.size,):
            raise ValueError(f"alpha must have one value per class ({class_list.size}), got {alphas.shape}")
    n_total = table.shape[1]
    order = np.random.default_rng(order_seed).permutation(n_total) if order_seed is not None else np.arange(n_total)
    g = table.shape[0]
    risk = np.full((class_list.size, g), np.nan)
    p = np.ones((class_list.size, g))
    n_c = np.zeros(class_list.size, dtype=np.int64)
    min_p = np.ones(class_list.size)
    for row, (c, a) in enumerate(zip(class_list.tolist(), alphas, strict=True)):
        members = order[labels[order] == c]  # the class's points, in the random order
        n_c[row] = members.size
        min_p[row] = min_achievable_pvalue(bound, int(members.size), float(a), delta)
        if members.size == 0:
            continue
        sub = table[:, members]
        risk[row] = sub.astype(np.float64).mean(axis=1)
        p[row] = _bound_pvalues(bound, sub, float(a), delta, f"losses of class {c!r}", None)
    return PerClassRisk(
        classes=class_list,
        n_per_class=n_c,
        alpha_per_class=alphas,
        risk=risk,
        p_values=p,
        min_pvalue=min_p,
        can_certify=min_p <= delta,
        bound=bound,
        delta=delta,
    )
