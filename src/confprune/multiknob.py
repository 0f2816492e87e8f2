"""Certify the cheapest model across several pruning families: Pareto testing over a declared
space of configurations (each :class:`~confprune.pruning.FamilySpec` × each ratio λ).

The space is declared before calibration (the specs and the λ grid); every configuration's cost
(MACs, export bytes or measured latency: the user picks the objective) is computed from the model
alone. Pareto testing (:func:`confprune.stats.pareto_test`, Laufer-Goldshtein et al. 2023;
procedure and validity in docs/pareto_testing.md) then splits the calibration points by a seed
into an optimisation part, on which the Pareto front of (estimated risks, cost) is found and
ordered, and a testing part, on which the ordered front is tested in fixed sequence; the cheapest
configuration that passes is certified. Choosing the configuration after looking at the data is
thereby inside the guarantee — unlike picking the best row of a criteria table. Several risks
(:class:`RiskSpec`) must all pass; the accuracy drop enters as its shifted mean (x = (d + 1)/2 at
(1 + α)/2, valid on [0, 1]), with d measured against the float dense model for every family (an
int8 family's λ = 0 member is not the reference), tested with WSR.

The result is a :class:`~confprune.api.CertifiedPruning` like a single family's, with one
certificate (its ``pareto`` block: the specs, the costs, the split seed, the front and its
p-values) that ``python -m confprune.verify`` re-derives. One family (K = 1) is certified with
Learn-Then-Test by the same runner; this module is the K > 1 case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .defaults import DEFAULT_DELTA
from .errors import OptionError
from .pruning import FamilySpec
from .stats.ltt import Calibration
from .stats.pareto import ParetoResult, pareto_test, split_order
from .stats.risks import DROP, RiskSpec, dense_reference, shifted_drop

#: macs: multiply-adds per sample executed with dense kernels (what a CPU runs; unstructured
#: pruning does not lower it); nonzero_macs: those with a nonzero weight (what sparse kernels could
#: skip); bytes: the compact export; latency: measured one-thread CPU seconds
OBJECTIVES = ("macs", "nonzero_macs", "bytes", "latency")
#: objectives a verifier recomputes; latency is measured on the issuing machine and recorded
RECOMPUTABLE_OBJECTIVES = ("macs", "nonzero_macs", "bytes")


def family_costs(model: nn.Module, family: Any, lambdas: Sequence[float], example: torch.Tensor, objective: str,
                 batch: int) -> np.ndarray:
    """Cost of every λ of one family (lower is cheaper)."""
    from . import cost as costs

    if objective in ("macs", "nonzero_macs"):
        x = torch.zeros_like(example[:1])
        return np.asarray([costs.count_macs(family.cost_model(model, float(lam)), x)[objective] for lam in lambdas],
                          dtype=np.float64)
    out = []
    for lam in lambdas:
        payload, net = family.export_payload(model, float(lam))
        if objective == "bytes":
            out.append(costs.serialized_bytes(payload))
        else:
            x = torch.zeros((batch, *example.shape[1:]), dtype=example.dtype)
            # Process CPU seconds of a one-thread pass (channels_last, as the runner's latency):
            # unlike wall time it leaves out waiting for a core, so other load on a shared
            # machine does not reorder the configurations.
            out.append(costs.measure_latency(net, x, threads=1, budget_s=0.15, channels_last=True)["cpu_median_s"])
    return np.asarray(out, dtype=np.float64)


@dataclass
class ParetoTables:
    """Every configuration's losses (R risks × C configurations × N points, each risk in its mean
    form on [0, 1]) and cost (C,), with what Pareto testing needs to read them. Configuration
    c = k·G + g is family k at λ = lambdas[g]."""

    specs: list[FamilySpec]
    lambdas: np.ndarray
    losses: np.ndarray  # (R, C, N)
    costs: np.ndarray  # (C,)
    risks: list[RiskSpec]
    alphas: list[float]  # in mean form
    bounds: list[str]
    objective: str
    families: list[Any] = field(repr=False)
    tables: list[dict[str, Any]] = field(repr=False)  # per family: loss table name → LossTable

    @property
    def configs(self) -> list[tuple[int, float]]:
        return [(k, float(lam)) for k in range(len(self.specs)) for lam in self.lambdas]

    def where(self, config: int) -> tuple[int, int]:
        """(family index, λ index) of a configuration."""
        return divmod(int(config), self.lambdas.size)


def check_pareto_risks(risks: Sequence[RiskSpec]) -> None:
    """Before any sweep: risks Pareto testing cannot test here."""
    if not risks:
        raise OptionError("risks", list(risks), "at least one RiskSpec")
    for r in risks:
        if r.per_class:
            raise OptionError("risks", r.name, "risks without per_class with Pareto testing (list the classes "
                              "as risks instead)")
        if r.loss == DROP and r.bound not in ("auto", "wsr"):
            raise ValueError(f"{r.name}: Pareto testing tests the accuracy drop in its mean form with WSR; "
                             f"bound={r.bound!r} is not available there (use auto or wsr)")


def pareto_tables(model: nn.Module, specs: Sequence[FamilySpec], families: Sequence[Any],
                  tables: Sequence[Mapping[str, Any]], risks: Sequence[RiskSpec], *, objective: str,
                  example: torch.Tensor, batch_size: int) -> ParetoTables:
    """Assemble the (R, C, N) mean-form losses and the (C,) costs from each family's loss tables
    (``tables[k]``: loss table name → LossTable of family k over the same grid and points)."""
    from .stats import resolve_bound

    if objective not in OBJECTIVES:
        raise OptionError("objective", objective, ", ".join(OBJECTIVES))
    check_pareto_risks(risks)
    grid = np.asarray(next(iter(tables[0].values())).grid, dtype=np.float64)
    per_family = [np.stack([_mean_form(r, t[r.table].losses, t[r.table].dense_losses) for r in risks])
                  for t in tables]  # (R, G, N) each
    losses = np.concatenate(per_family, axis=1)
    costs = np.concatenate([family_costs(model, fam, grid, example, objective, batch_size) for fam in families])
    bounds = ["wsr" if r.loss == DROP else resolve_bound(r.bound, losses[i]) for i, r in enumerate(risks)]
    return ParetoTables(list(specs), grid, losses, costs, list(risks),
                        [(1 + r.alpha) / 2 if r.loss == DROP else r.alpha for r in risks], bounds, objective,
                        list(families), [dict(t) for t in tables])


def knob_tables(
    model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], *, knobs: Sequence[FamilySpec],
    risks: Sequence[RiskSpec], lambdas: Sequence[float], objective: str = "macs", batch_size: int = 500,
    score_inputs: torch.Tensor | None = None, progress: bool = False,
) -> ParetoTables:
    """Build every family of ``knobs`` and sweep it once (every risk's loss from the same pass)."""
    from .losses import make_loss
    from .sweep import compute_loss_tables

    if objective not in OBJECTIVES:
        raise OptionError("objective", objective, ", ".join(OBJECTIVES))
    if not knobs:
        raise OptionError("knobs", list(knobs), "at least one FamilySpec (one pruning family)")
    check_pareto_risks(risks)
    x, y = data
    example = torch.zeros_like(x[:2])
    grid = np.asarray(lambdas, dtype=np.float64)
    names = list(dict.fromkeys(r.table for r in risks))
    families, tables = [], []
    for spec in knobs:
        fam = spec.build(model, score_inputs=score_inputs, example_inputs=example)
        swept = compute_loss_tables(model, fam, grid, (x, y), [make_loss(n) for n in names], batch_size=batch_size,
                                    progress=progress)
        families.append(fam)
        tables.append(dict(zip(names, swept, strict=True)))
    return pareto_tables(model, knobs, families, tables, risks, objective=objective, example=example,
                         batch_size=batch_size)


def run_pareto(pt: ParetoTables, columns: np.ndarray, *, delta: float, opt_fraction: float, seed: int) -> ParetoResult:
    """Pareto testing on the calibration ``columns`` of the tables."""
    return pareto_test(pt.losses[:, :, np.asarray(columns)], pt.costs, pt.alphas, delta, bounds=pt.bounds,
                       opt_fraction=opt_fraction, seed=seed)


def family_view(pt: ParetoTables, result: ParetoResult, columns: np.ndarray, *, delta: float,
                seed: int) -> tuple[int, Calibration]:
    """The deployed family (the certified configuration's; the first when nothing is certified)
    as an LTT-shaped :class:`Calibration`: its λ index, the testing-part p-values of its G
    configurations (max over risks), which of them are in the rejected prefix, and its first risk
    on the whole calibration set in the risk's natural form."""
    from .stats import pvalues_from_losses

    k, g = pt.where(result.certified_index) if result.certified else (0, -1)
    cols = np.asarray(columns)
    testing = cols[split_order(cols.size, 0, seed)[result.n_opt:]]  # in the order WSR bets in
    rows = slice(k * pt.lambdas.size, (k + 1) * pt.lambdas.size)
    p = np.max([pvalues_from_losses(b, pt.losses[i, rows][:, testing], a, delta)
                for i, (a, b) in enumerate(zip(pt.alphas, pt.bounds, strict=True))], axis=0)
    rejected = np.zeros(pt.lambdas.size, dtype=bool)
    for c in result.order[result.rejected]:
        kc, gc = pt.where(c)
        rejected[gc] |= kc == k
    mean = pt.losses[0, rows][:, cols].mean(axis=1)
    risk = 2 * mean - 1 if pt.risks[0].loss == DROP else mean
    cal = Calibration(int(g), np.asarray(p, dtype=np.float64), rejected, np.asarray(risk, dtype=np.float64),
                      int(cols.size), float(pt.risks[0].alpha), float(delta), "+".join(pt.bounds), "pareto_testing")
    return k, cal


def pareto_record(pt: ParetoTables, result: ParetoResult, *, opt_fraction: float, seed: int,
                  costs_recorded: bool) -> dict[str, Any]:
    """The certificate's ``pareto`` block: everything verify needs to re-run Pareto testing."""
    return {
        "families": [spec.config for spec in pt.specs],
        "labels": [spec.label for spec in pt.specs],
        "objective": pt.objective,
        "costs": [float(c) for c in pt.costs],
        "costs_source": "recorded (measured on the issuing machine)" if costs_recorded else "recomputable",
        "alphas_mean_form": [float(a) for a in pt.alphas],
        "bounds": list(pt.bounds),
        "opt_fraction": float(opt_fraction),
        "split_seed": int(seed),
        "n_opt": int(result.n_opt), "n_test": int(result.n_test),
        "front": [int(c) for c in result.front],
        "order": [int(c) for c in result.order],
        "front_risks_opt": [[float(r) for r in row] for row in result.front_risks],  # (R, F), front's index order
        "risk_names": [r.name for r in pt.risks],
        "opt_pvalues": [float(p) for p in result.opt_pvalues],
        "test_pvalues": [float(p) for p in result.test_pvalues],
        "rejected": [bool(r) for r in result.rejected],
        "certified_config": int(result.certified_index),
        "certified_family": int(pt.where(result.certified_index)[0]) if result.certified else None,
        "certified_cost": float(result.certified_cost) if result.certified else None,
    }


def certify_pareto_from_tables(
    model: nn.Module, pt: ParetoTables, columns: np.ndarray | None = None, *, delta: float,
    opt_fraction: float = 0.5, seed: int = 0, calibration_draw: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None, model_info: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None, cost_of: Any = None, holdout: np.ndarray | None = None,
) -> Any:
    """Pareto testing on the calibration ``columns`` of the tables (None: every point): a
    :class:`~confprune.api.CertifiedPruning` whose family is the certified configuration's, with
    one certificate (its ``pareto`` block re-derivable by verify)."""
    from .api import certified_result, issuer_order

    cols, draw = issuer_order(np.arange(pt.losses.shape[2]) if columns is None else columns, calibration_draw,
                              data_info, seed)
    result = run_pareto(pt, cols, delta=delta, opt_fraction=opt_fraction, seed=seed)
    k, cal = family_view(pt, result, cols, delta=delta, seed=seed)
    record = pareto_record(pt, result, opt_fraction=opt_fraction, seed=seed,
                           costs_recorded=pt.objective not in RECOMPUTABLE_OBJECTIVES)
    risks = [{**asdict(r), "name": r.name, "bound": b, "requested_bound": r.bound}
             for r, b in zip(pt.risks, pt.bounds, strict=True)]
    first = pt.tables[k][pt.risks[0].table]
    return certified_result(
        model, pt.families[k], first, pt.risks[0].table, cal, cols, calibration_draw=draw,
        data_info=data_info, model_info=model_info, extra={**dict(extra or {}), "pareto": record}, risks=risks,
        pareto=result, indices_given=columns is not None, procedure="pareto_testing", cost_of=cost_of,
        holdout=holdout,
    )


def certify_pareto(
    model: nn.Module,
    calibration_data: tuple[torch.Tensor, torch.Tensor],
    *,
    knobs: Sequence[FamilySpec],
    risks: Sequence[RiskSpec],
    delta: float = DEFAULT_DELTA,
    lambdas: Sequence[float] = tuple(round(0.05 * i, 2) for i in range(20)),
    objective: str = "macs",
    opt_fraction: float = 0.5,
    seed: int = 0,
    batch_size: int = 500,
    score_inputs: torch.Tensor | None = None,
    progress: bool = False,
) -> Any:
    """Certify the cheapest configuration of ``knobs`` × ``lambdas`` whose every risk is at most its
    α, with probability ≥ 1 − δ over the calibration data (Pareto testing; see the module doc).

    ``calibration_data``: (inputs, targets) of the calibration set (exchangeable with deployment
    data, unused in training; an issuer-chosen set: the certificate says so). ``objective``:
    ``"macs"`` (multiply-adds per sample executed with dense kernels), ``"nonzero_macs"`` (those
    with a nonzero weight), ``"bytes"`` (compact export) or ``"latency"`` (one-thread CPU seconds
    at ``batch_size``, measured here, on zeros). ``seed``: the optimisation/testing split.
    ``score_inputs``: training inputs for data-informed criteria. Returns a
    :class:`~confprune.api.CertifiedPruning` (``.pareto``: the front; ``.front()``: its rows).
    """
    pt = knob_tables(model, calibration_data, knobs=knobs, risks=risks, lambdas=lambdas, objective=objective,
                     batch_size=batch_size, score_inputs=score_inputs, progress=progress)
    return certify_pareto_from_tables(model, pt, None, delta=delta, opt_fraction=opt_fraction, seed=seed)


def iid_validate_pareto(pt: ParetoTables, *, n_cal: int, reps: int, delta: float, opt_fraction: float = 0.5,
                        seed: int = 0) -> dict[str, Any]:
    """The exact check of the whole procedure on real tables: ``reps`` calibration sets drawn
    i.i.d. from the pool, Pareto testing on each, a violation when the deployed configuration's
    pool risk (the truth under these draws) exceeds some α. Returns coverage, its interval, the
    certified fraction and the median deployed cost."""
    from .stats import clopper_pearson

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9A2E]))
    truth = pt.losses.mean(axis=2)  # (R, C)
    bad = (truth > np.asarray(pt.alphas)[:, None]).any(axis=0)
    violated, costs = [], []
    for r in range(reps):
        idx = rng.integers(0, pt.losses.shape[2], size=n_cal)
        res = run_pareto(pt, idx, delta=delta, opt_fraction=opt_fraction, seed=seed + r)
        violated.append(res.certified and bool(bad[res.certified_index]))
        costs.append(res.certified_cost if res.certified else np.nan)
    ok = reps - int(np.sum(violated))
    return {"coverage": ok / reps, "coverage_ci": list(clopper_pearson(ok, reps)), "reps": reps,
            "violations": int(np.sum(violated)), "certified_fraction": float(np.mean(np.isfinite(costs))),
            "median_cost": float(np.nanmedian(costs)) if np.isfinite(costs).any() else None}


def single_family_costs(pt: ParetoTables, columns: np.ndarray, *, delta: float) -> list[dict[str, Any]]:
    """Each family certified alone (all risks, fixed sequence) on the same calibration set, for
    comparison with the Pareto choice: its λ̂ and cost."""
    from .stats.risks import calibrate_risks

    g = pt.lambdas.size
    out = []
    specs = [RiskSpec(f"risk{i}", a, b) for i, (a, b) in enumerate(zip(pt.alphas, pt.bounds, strict=True))]
    for k, spec in enumerate(pt.specs):
        tables = {f"risk{i}": pt.losses[i, k * g:(k + 1) * g] for i in range(len(pt.risks))}
        cal, _ = calibrate_risks(tables, specs, np.asarray(columns), delta=delta)
        out.append({"knob": spec.label, "lambda": float(pt.lambdas[cal.lambda_index]) if cal.certified else None,
                    "cost": float(pt.costs[k * g + cal.lambda_index]) if cal.certified else None})
    return out


def _mean_form(spec: RiskSpec, losses: np.ndarray, dense: np.ndarray | None) -> np.ndarray:
    """A risk as a mean loss in [0, 1]: the accuracy drop as x = (d + 1)/2 with d = L(λ) − L_dense,
    ``dense`` the dense model's own label_01 row (N,)."""
    if spec.loss == DROP:
        return shifted_drop(losses, dense_reference({spec.table: dense} if dense is not None else None, spec,
                                                    losses.shape[1]))
    return losses




def front_figure(pt: ParetoTables, result: Any, out_dir: Any, what: str = "",
                 formats: tuple[str, ...] | list[str] = ("png", "pdf")) -> list[str]:
    """Risk vs cost of every configuration (pool risk of the first risk, one colour per family,
    int8 families dashed with hollow markers so that a float twin never hides them), the
    optimisation-part Pareto front with its first testing positions, and the certified
    configuration. ``what``: the model and data, for the title."""
    from pathlib import Path

    from .figures import save_figure

    return save_figure(_front_plot(pt, result, what), Path(out_dir), "pareto_front", formats)


def _front_plot(pt: ParetoTables, result: Any, what: str) -> Any:
    from matplotlib.figure import Figure

    from .figures import styled
    from .figures.style import _legend_below

    @styled
    def build() -> Figure:
        risk = pt.losses[0].mean(axis=1)  # (C,) in mean form
        alpha, g, rec = pt.alphas[0], pt.lambdas.size, result.certificate["pareto"]
        fig = Figure(figsize=(5.6, 4.4), layout="constrained")
        ax = fig.add_subplot()
        for k, spec in enumerate(pt.specs):
            ax.plot(pt.costs[k * g:(k + 1) * g], risk[k * g:(k + 1) * g], marker="o" if spec.quantize else ".",
                    ms=4 if spec.quantize else 3, mfc="none" if spec.quantize else None, color=f"C{k}",
                    ls="--" if spec.quantize else "-", lw=0.8, label=spec.label)
        front = np.asarray(rec["order"], dtype=np.int64)
        ax.plot(pt.costs[front], risk[front], "s", mfc="none", mec="k", ms=7, lw=0,
                label="Pareto front (numbers: testing order)")
        for pos, c in enumerate(front[:6]):  # the first positions; later ones crowd the same corner
            ax.annotate(str(pos + 1), (pt.costs[c], risk[c]), fontsize=6,
                        xytext=(4, -9 if pos % 2 else 4), textcoords="offset points")
        if result.certified:
            c = rec["certified_config"]
            ax.plot([pt.costs[c]], [risk[c]], "*", color="gold", mec="k", mew=0.8, ms=14, zorder=5,
                    label=f"certified: {rec['labels'][rec['certified_family']]}, λ={result.lambda_hat:g}")
        shifted = " (drop, shifted to (1+α)/2)" if pt.risks[0].loss == DROP else ""
        ax.axhline(alpha, color="C3", ls="--", lw=1, label=f"α = {alpha:g}{shifted}")
        units = {"macs": " (multiply-adds per sample)", "nonzero_macs": " (multiply-adds per sample)",
                 "bytes": " (bytes of the export)", "latency": " (one-thread CPU seconds per batch)"}[pt.objective]
        ax.set_xlabel(f"cost: {pt.objective}{units}")
        ax.set_ylabel(f"pool risk ({pt.risks[0].name})")
        ax.set_ylim(0, min(1.0, max(3 * alpha, 0.05)))
        ax.set_title(f"{what + ': ' if what else ''}Pareto testing over {len(pt.specs)} families × {g} λ\n"
                     f"δ = {result.calibration.delta:g}; {' and '.join(r.name for r in pt.risks)}")
        _legend_below(fig, ax, ncol=2)  # below the axes: the families' curves fill the plot
        return fig

    return build()


def write_front(result: Any, path: Any) -> str:
    """``pareto_front.csv``: the front in testing order (``CertifiedPruning.front``)."""
    import csv

    rows = result.front()
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["order"])
        w.writeheader()
        w.writerows(rows)
    return str(path)


__all__ = [
    "OBJECTIVES", "ParetoTables", "certify_pareto", "certify_pareto_from_tables", "family_costs",
    "front_figure", "iid_validate_pareto", "knob_tables", "pareto_record", "pareto_tables", "run_pareto",
    "single_family_costs", "write_front",
]
