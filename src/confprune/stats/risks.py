"""Several risks at once on loss tables: each risk's p-values for one calibration set or many
splits, the intersection–union decision (a λ passes when every risk's null is rejected), and the
test and true risks that validate it.

A risk is a :class:`RiskSpec`: a mean loss with its level and bound (``label_01 ≤ 0.03``), the
**accuracy drop** relative to the dense model (``accuracy_drop ≤ 0.01``: the mean of
1{pruned wrong} − 1{dense wrong} ∈ {−1, 0, 1}, from the label_01 table and the dense model's own
label_01 losses — passed as ``dense={"label_01": (N,)}``, never read off the table's first row,
which is not the dense model when the grid does not start at 0 or the family is quantised — with
the exact trinomial test or WSR on the shifted range, :mod:`.drop`), or a **per-class** risk (one
risk per class, each estimated on that class's calibration points and valid conditionally on the
labels, :mod:`.multirisk`). The combined p-value of a grid point is the maximum over risks
(and classes): valid with no correction (Berger 1982). Loss tables have shape (G, N): grid points
by pool points; NumPy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .drop import DROP_METHODS, exact_drop_pvalue
from .fwer import NOT_CERTIFIED, FwerProcedure, certified_index, make_fwer
from .ltt import (
    Calibration,
    IidValidation,
    Splits,
    SplitValidation,
    _cal_sums,
    check_loss_table,
    is_binary,
    reject_on_grid,
    split_pvalues,
)
from .pvalues import BOUNDS, get_bound, pvalues_from_sums, resolve_bound

DROP = "accuracy_drop"


@dataclass(frozen=True)
class RiskSpec:
    """One risk to control: ``loss`` (a registered loss, or ``"accuracy_drop"``) at most ``alpha``.

    ``bound``: for a mean or per-class risk, a bound name (``"auto"``: binomial for a binary table,
    else hb); for the accuracy drop, ``"exact"`` (default) or ``"wsr"``. ``per_class``: one risk per
    class at level ``alpha`` each. ``gamma``: the exact drop test's Berger–Boos level (default δ/10,
    ours).
    """

    loss: str
    alpha: float
    bound: str = "auto"
    per_class: bool = False
    gamma: float | None = None

    @property
    def table(self) -> str:
        """The loss table the risk is computed from."""
        return "label_01" if self.loss == DROP else self.loss

    @property
    def name(self) -> str:
        return f"{self.loss}{'[per class]' if self.per_class else ''}<={self.alpha:g}"

    def resolved(self, losses: np.ndarray) -> RiskSpec:
        """The spec with ``bound="auto"`` resolved on its table, and checked."""
        if self.loss == DROP:
            bound = "exact" if self.bound == "auto" else self.bound
            if bound not in DROP_METHODS:
                raise ValueError(f"accuracy_drop: bound={bound!r} is not allowed; choose {', '.join(DROP_METHODS)}")
            if self.per_class:
                raise ValueError("accuracy_drop is one risk over all points: per_class=True is not allowed")
            if not 0 < self.alpha < 1:
                # α = 0 can never certify under fixed sequence: at λ = 0 the pruned model is the
                # dense one, d ≡ 0, and "E[d] ≤ 0" cannot be shown from d ≡ 0.
                raise ValueError(f"accuracy_drop: alpha={self.alpha!r} must lie in (0, 1) (a drop of 0 can never be certified)")
            if self.gamma is not None and not 0 < self.gamma < 1:
                raise ValueError(f"accuracy_drop: gamma={self.gamma!r} must lie in (0, 1)")
            return replace(self, bound=bound)
        if self.bound != "auto" and self.bound not in BOUNDS:
            raise ValueError(f"risk {self.loss}: bound={self.bound!r} is not allowed; choose auto or {', '.join(BOUNDS)}")
        try:
            bound = resolve_bound(self.bound, losses)
        except ValueError as err:
            raise ValueError(f"risk {self.loss} ({self.table} table): {err}") from None
        if self.per_class and get_bound(bound).sequential:
            raise ValueError(f"risk {self.loss} per class: bound={bound!r} is not supported; use binomial, hoeffding, bentkus or hb")
        if not 0 < self.alpha < 1:
            raise ValueError(f"risk {self.loss}: alpha={self.alpha!r} must lie in (0, 1)")
        return replace(self, bound=bound)


def _drop_tables(losses: np.ndarray, dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N₊ and N₋ indicators (G, N) from a label_01 table and the dense model's label_01 row (N,)."""
    return losses * (1 - dense), (1 - losses) * dense


def shifted_drop(losses: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """x = (d + 1)/2 ∈ {0, ½, 1} with d = L(λ) − L_dense: the drop on [0, 1] (for WSR and Pareto
    testing's mean form); ``losses`` (G, N) label_01, ``dense`` (N,) the dense model's label_01."""
    return (np.asarray(losses, dtype=np.float64) - np.asarray(dense, dtype=np.float64) + 1.0) / 2.0


def dense_reference(dense: Mapping[str, np.ndarray] | None, spec: RiskSpec, n_points: int) -> np.ndarray | None:
    """The dense model's own losses (N,) that ``spec`` is measured against (None: it needs none)."""
    if spec.loss != DROP:
        return None
    row = None if dense is None else dense.get(spec.table)
    if row is None:
        raise ValueError(
            f"{spec.name}: the accuracy drop needs the dense model's own per-sample {spec.table} losses "
            f"(dense={{'{spec.table}': array of shape ({n_points},)}}); the table's first row is not the dense model "
            "in general (a grid that does not start at 0, a quantised family)")
    row = np.asarray(row)
    if row.shape != (n_points,):
        raise ValueError(f"{spec.name}: the dense row has shape {row.shape}, expected ({n_points},)")
    if not is_binary(row[None]):
        raise ValueError(f"{spec.name}: the dense model's {spec.table} losses must be 0/1")
    return row


def _risk_split_pvalues(spec: RiskSpec, losses: np.ndarray, splits: Splits, delta: float,
                        labels: np.ndarray | None, dense: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(p, estimate), each (G, S): the risk's p-values and calibration estimate on every split."""
    n = splits.n_cal
    if spec.loss == DROP:
        assert dense is not None
        if spec.bound == "wsr":
            p, x = split_pvalues(shifted_drop(losses, dense), splits, alpha=(1 + spec.alpha) / 2, delta=delta,
                                 bound="wsr")
            return p, 2 * x - 1
        plus, minus = _drop_tables(losses, dense)
        n_plus = np.rint(_cal_sums(plus, splits.cal_mask, True)).astype(np.int64)
        n_minus = np.rint(_cal_sums(minus, splits.cal_mask, True)).astype(np.int64)
        gamma = delta / 10 if spec.gamma is None else spec.gamma
        return exact_drop_pvalue(n_plus, n_minus, n, spec.alpha, gamma=gamma), (n_plus - n_minus) / n
    if not spec.per_class:
        return split_pvalues(losses, splits, alpha=spec.alpha, delta=delta, bound=spec.bound)
    if labels is None:
        raise ValueError(f"risk {spec.name} is per class: labels are needed")
    p = np.zeros((losses.shape[0], splits.n_splits))
    worst = np.full_like(p, -np.inf)
    for c in np.unique(labels):
        cols = labels == c
        weights = splits.cal_mask[:, cols]
        sums = _cal_sums(losses[:, cols], weights, is_binary(losses))
        counts = weights.sum(axis=1).astype(np.int64)  # n_c per split (S,)
        pc = np.ones_like(p)
        for n_c in np.unique(counts[counts > 0]):
            at = counts == n_c
            pc[:, at] = pvalues_from_sums(spec.bound, sums[:, at], int(n_c), spec.alpha)
        p = np.maximum(p, pc)
        worst = np.maximum(worst, np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf))
    return p, worst


def _risk_on(spec: RiskSpec, losses: np.ndarray, weights: np.ndarray, labels: np.ndarray | None,
             dense: np.ndarray | None) -> np.ndarray:
    """The risk (G, S) of each row on the points weighted by ``weights`` (S, N): the mean loss,
    the mean drop against the dense model, or the largest class risk."""
    w = weights.astype(np.float64)
    if spec.loss == DROP:
        d = losses.astype(np.float64) - np.asarray(dense, dtype=np.float64)
        return (d @ w.T) / np.maximum(w.sum(axis=1), 1)
    if not spec.per_class:
        return (losses.astype(np.float64) @ w.T) / np.maximum(w.sum(axis=1), 1)
    out = np.full((losses.shape[0], w.shape[0]), -np.inf)
    for c in np.unique(labels):
        cols = labels == c
        wc = w[:, cols]
        out = np.maximum(out, np.where(wc.sum(1) > 0, (losses[:, cols].astype(np.float64) @ wc.T) / np.maximum(wc.sum(1), 1), -np.inf))
    return out


def _combined(tables: Mapping[str, np.ndarray], specs: Sequence[RiskSpec], splits: Splits, delta: float,
              labels: np.ndarray | None, dense: Mapping[str, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Combined p (G, S) = max over risks, the first risk's estimate (G, S), and every risk's p."""
    per_risk = [_risk_split_pvalues(s, tables[s.table], splits, delta, labels,
                                    dense_reference(dense, s, tables[s.table].shape[1])) for s in specs]
    return np.max([p for p, _ in per_risk], axis=0), per_risk[0][1], [p for p, _ in per_risk]


def resolve_risks(tables: Mapping[str, np.ndarray], specs: Sequence[RiskSpec],
                  dense: Mapping[str, np.ndarray] | None = None) -> list[RiskSpec]:
    """Specs with their bounds resolved; the tables they need (and, for the accuracy drop, the
    dense model's own row in ``dense``) must be present and valid."""
    if not specs:
        raise ValueError("at least one risk is needed")
    rows = {check_loss_table(tables[s.table], s.table).shape[0] for s in specs if s.table in tables}
    missing = sorted({s.table for s in specs} - set(tables))
    if missing:
        raise ValueError(f"no loss table for {', '.join(missing)}")
    if len(rows) != 1:
        raise ValueError("the loss tables of the risks cover different grid prefixes")
    resolved = [s.resolved(np.asarray(tables[s.table])) for s in specs]
    for s in resolved:
        dense_reference(dense, s, np.shape(tables[s.table])[1])
    return resolved


def _violations(tables: Mapping[str, np.ndarray], specs: Sequence[RiskSpec], rows: np.ndarray, weights: np.ndarray,
                labels: np.ndarray | None, dense: Mapping[str, np.ndarray] | None) -> np.ndarray:
    """(S,) True where some risk at the chosen row exceeds its level on the weighted points."""
    out = np.zeros(weights.shape[0], dtype=bool)
    cols = np.arange(weights.shape[0])
    for s in specs:
        ref = dense_reference(dense, s, tables[s.table].shape[1])
        risk = _risk_on(s, tables[s.table], weights, labels, ref)[rows, cols]
        out |= risk > s.alpha
    return out


def validate_risks(
    tables: Mapping[str, np.ndarray], specs: Sequence[RiskSpec], splits: Splits, *, delta: float,
    fwer: FwerProcedure | str = "fixed_sequence", n_grid: int | None = None, labels: np.ndarray | None = None,
    keep_pvalues: bool = False, dense: Mapping[str, np.ndarray] | None = None,
) -> SplitValidation:
    """LTT with several risks on each random split; a split violates when some risk's test risk
    at λ̂ exceeds its level. ``test_risk`` and ``cal_risk`` report the first risk. ``dense``: the
    dense model's own losses (N,) by table name (the accuracy drop's reference)."""
    specs = resolve_risks(tables, specs, dense)
    procedure = make_fwer(fwer)
    p, est, _ = _combined(tables, specs, splits, delta, labels, dense)
    idx = certified_index(reject_on_grid(procedure, p, delta, n_grid))
    certified = idx != NOT_CERTIFIED
    safe = np.where(certified, idx, 0)
    cols = np.arange(splits.n_splits)
    first = tables[specs[0].table]
    if splits.n_test:
        ref = dense_reference(dense, specs[0], first.shape[1])
        test_risk = np.where(certified, _risk_on(specs[0], first, splits.test_mask, labels, ref)[safe, cols], np.nan)
        violated = certified & _violations(tables, specs, safe, splits.test_mask, labels, dense)
    else:
        test_risk, violated = np.full(splits.n_splits, np.nan), np.zeros(splits.n_splits, dtype=bool)
    return SplitValidation(
        lambda_index=idx, certified=certified, cal_risk=np.where(certified, est[safe, cols], np.nan),
        test_risk=test_risk, violated=violated, alpha=specs[0].alpha, delta=delta, n_cal=splits.n_cal,
        n_test=splits.n_test, p_values=p if keep_pvalues else None, cal_risk_table=est if keep_pvalues else None,
    )


def iid_validate_risks(
    tables: Mapping[str, np.ndarray], specs: Sequence[RiskSpec], draws: Splits, *, delta: float,
    fwer: FwerProcedure | str = "fixed_sequence", n_grid: int | None = None, labels: np.ndarray | None = None,
    dense: Mapping[str, np.ndarray] | None = None,
) -> IidValidation:
    """The exact check with several risks: i.i.d. calibration draws from the pool, scored against
    the pool's risks (the true risks under these draws)."""
    specs = resolve_risks(tables, specs, dense)
    p, _, _ = _combined(tables, specs, draws, delta, labels, dense)
    idx = certified_index(reject_on_grid(make_fwer(fwer), p, delta, n_grid))
    pool = np.ones((1, next(iter(tables.values())).shape[1]))
    bad_rows = _violations(tables, specs, np.arange(p.shape[0]), np.repeat(pool, p.shape[0], axis=0), labels, dense)
    violated = (idx != NOT_CERTIFIED) & bad_rows[np.maximum(idx, 0)]
    return IidValidation(lambda_index=idx, violated=violated, alpha=specs[0].alpha, delta=delta)


def calibrate_risks(
    tables: Mapping[str, np.ndarray], specs: Sequence[RiskSpec], cal_indices: np.ndarray, *, delta: float,
    fwer: FwerProcedure | str = "fixed_sequence", n_grid: int | None = None, labels: np.ndarray | None = None,
    dense: Mapping[str, np.ndarray] | None = None,
) -> tuple[Calibration, dict[str, np.ndarray]]:
    """LTT with several risks on one calibration set (its indices in the order used, which WSR
    bets in). Returns the :class:`Calibration` (combined p-values; ``risk`` is the first risk's
    estimate) and each risk's p-values (G,) by name. ``dense``: the dense model's own losses
    (N,) by table name, needed by the accuracy drop."""
    specs = resolve_risks(tables, specs, dense)
    n_pool = next(iter(tables.values())).shape[1]
    idx = np.asarray(cal_indices, dtype=np.int64)
    mask = np.zeros((1, n_pool), dtype=np.uint16)
    np.add.at(mask[0], idx, 1)
    one = Splits(cal_mask=mask, test_mask=np.zeros((1, n_pool), dtype=bool), order_seed=np.random.SeedSequence(0),
                 orders=idx[None])
    p, est, each = _combined(tables, specs, one, delta, labels, dense)
    procedure = make_fwer(fwer)
    rejected = reject_on_grid(procedure, p, delta, n_grid)[:, 0]
    cal = Calibration(lambda_index=int(certified_index(rejected)), p_values=p[:, 0], rejected=rejected, risk=est[:, 0],
                      n=int(idx.size), alpha=specs[0].alpha, delta=delta, bound="+".join(s.bound for s in specs),
                      fwer=procedure.name)
    return cal, {s.name: q[:, 0] for s, q in zip(specs, each, strict=True)}


__all__ = ["DROP", "RiskSpec", "calibrate_risks", "dense_reference", "iid_validate_risks", "resolve_risks",
           "shifted_drop", "validate_risks"]
