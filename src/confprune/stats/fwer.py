"""Family-wise error rate (FWER) procedures over the λ grid (method.md §4), vectorised over splits.

Each procedure maps p-values of shape (G, S) — grid × splits — and a level δ to a boolean
rejection mask of the same shape. ``certified_index`` turns that mask into the certified λ index
per split: the largest rejected index (the largest sparsity), or ``NOT_CERTIFIED`` (−1) when the
rejected set is empty. "Nothing certified" is an explicit result, never the most-pruned λ.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from ..errors import OptionError

FwerName = Literal["fixed_sequence", "bonferroni", "holm", "multistart"]
NOT_CERTIFIED = -1


def _as_2d(p: np.ndarray) -> tuple[np.ndarray, bool]:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 1:
        return p[:, None], True
    if p.ndim != 2:
        raise ValueError(f"p-values must have shape (G,) or (G, S), got {p.shape}")
    return p, False


def _check_delta(delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")


def _prefix_until_failure(ok: np.ndarray) -> np.ndarray:
    """For each column, True on the leading run of True values in ``ok`` (shape (G, S))."""
    fail = ~ok
    first_fail = np.where(fail.any(axis=0), fail.argmax(axis=0), ok.shape[0])
    return np.arange(ok.shape[0])[:, None] < first_fail[None, :]


@dataclass(frozen=True)
class FixedSequence:
    """Test λ_1, λ_2, … in order, each at level δ; stop at the first p > δ.

    Valid without monotone risk and powerful when risk grows with λ. If λ_1 is not rejected
    nothing is certified.
    """

    name: str = "fixed_sequence"

    def reject(self, p: np.ndarray, delta: float) -> np.ndarray:
        _check_delta(delta)
        p2, squeeze = _as_2d(p)
        out = _prefix_until_failure(p2 <= delta)
        return out[:, 0] if squeeze else out


@dataclass(frozen=True)
class Bonferroni:
    """Reject every H_j with p_j ≤ δ/G."""

    name: str = "bonferroni"

    def reject(self, p: np.ndarray, delta: float) -> np.ndarray:
        _check_delta(delta)
        p2, squeeze = _as_2d(p)
        out = p2 <= delta / p2.shape[0]
        return out[:, 0] if squeeze else out


@dataclass(frozen=True)
class Holm:
    """Holm's step-down: sort p ascending, reject p_(k) ≤ δ/(G − k + 1) until the first failure."""

    name: str = "holm"

    def reject(self, p: np.ndarray, delta: float) -> np.ndarray:
        _check_delta(delta)
        p2, squeeze = _as_2d(p)
        g = p2.shape[0]
        order = np.argsort(p2, axis=0, kind="stable")
        p_sorted = np.take_along_axis(p2, order, axis=0)
        thresholds = delta / (g - np.arange(g))[:, None]
        rejected_sorted = _prefix_until_failure(p_sorted <= thresholds)
        out = np.zeros_like(rejected_sorted)
        np.put_along_axis(out, order, rejected_sorted, axis=0)
        return out[:, 0] if squeeze else out


@dataclass(frozen=True)
class MultiStartFixedSequence:
    """Fixed-sequence chains from ``n_starts`` evenly spaced start points, each at level δ/n_starts.

    Each chain tests its start and the following grid points in order until its first failure;
    the rejected set is the union of the chains (valid by a union bound over the chains). Start
    points are fixed by the grid alone, before any data is seen.
    """

    n_starts: int = 4
    name: str = "multistart"

    def __post_init__(self) -> None:
        if isinstance(self.n_starts, bool) or not isinstance(self.n_starts, int) or self.n_starts < 1:
            raise OptionError("n_starts", self.n_starts, "an integer ≥ 1")

    def starts(self, g: int) -> np.ndarray:
        return np.unique(np.round(np.linspace(0, g - 1, min(self.n_starts, g))).astype(int))

    def reject(self, p: np.ndarray, delta: float) -> np.ndarray:
        _check_delta(delta)
        p2, squeeze = _as_2d(p)
        g = p2.shape[0]
        starts = self.starts(g)
        level = delta / len(starts)
        ok = p2 <= level
        out = np.zeros_like(ok)
        for s in starts:
            out[s:] |= _prefix_until_failure(ok[s:])
        return out[:, 0] if squeeze else out


FwerProcedure = FixedSequence | Bonferroni | Holm | MultiStartFixedSequence

#: registered procedures by name; an ``fwer`` config's keys besides ``name`` are the class's fields
FWERS: dict[str, type] = {
    "fixed_sequence": FixedSequence,
    "bonferroni": Bonferroni,
    "holm": Holm,
    "multistart": MultiStartFixedSequence,
}


def make_fwer(name: str | FwerProcedure, **options: object) -> FwerProcedure:
    """A procedure by name with its options (``make_fwer("multistart", n_starts=8)``; an ``fwer``
    config's keys are exactly these arguments), or the procedure object itself (MAPIE's
    convention: options then travel inside the object)."""
    if not isinstance(name, str):
        if options:
            raise OptionError("fwer", name, "a name when options are given, or a procedure object alone")
        if not callable(getattr(name, "reject", None)):
            raise OptionError("fwer", name, f"a name ({', '.join(FWERS)}) or an object with reject(p, delta)")
        return name
    if name not in FWERS:
        raise OptionError("fwer", name, f"{', '.join(FWERS)} (or a procedure object)")
    try:
        return FWERS[name](**options)
    except TypeError:
        allowed = [f.name for f in fields(FWERS[name]) if f.name != "name"]
        unknown = sorted(set(options) - set(allowed))
        raise OptionError(unknown[0] if unknown else "fwer", options, f"the options of {name}: {', '.join(allowed) or 'none'}") from None


def certified_index(rejected: np.ndarray) -> np.ndarray:
    """Largest rejected grid index per column of a (G, S) mask, or NOT_CERTIFIED (−1).

    For a 1-D mask of shape (G,) returns a 0-d integer array.
    """
    rejected = np.asarray(rejected, dtype=bool)
    g = rejected.shape[0]
    last = g - 1 - np.argmax(rejected[::-1], axis=0)
    return np.where(rejected.any(axis=0), last, NOT_CERTIFIED)
