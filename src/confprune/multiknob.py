"""Certify the cheapest model across several knobs: Pareto testing over a declared family of
configurations (criterion × structure × ratio λ × optional int8 quantisation of Linear layers).

The family is declared before calibration (:class:`Knob` list and the λ grid); every
configuration's cost (MACs, export bytes or measured latency: the user picks the objective) is
computed from the model alone. :func:`certify_pareto` then runs Pareto testing
(:func:`confprune.stats.pareto_test`, Laufer-Goldshtein et al. 2023; procedure and validity in
docs/pareto_testing.md): the calibration points are split by a seed into an optimisation part,
on which the Pareto front of (estimated risks, cost) is found and ordered, and a testing part, on
which the ordered front is tested in fixed sequence; the cheapest configuration that passes is
certified. Choosing the configuration after looking at the data is thereby inside the guarantee
— unlike picking the best row of a criteria table. Several risks (:class:`RiskSpec`) must all
pass; the accuracy drop enters as its shifted mean (x = (d + 1)/2 at (1 + α)/2, valid on [0, 1]),
with d measured against the float dense model for every knob (an int8 knob's λ = 0 member is not
the reference), tested with WSR (the exact trinomial test is not available in this mean form).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import OptionError
from .losses import make_loss
from .pruning import build_family
from .stats.pareto import ParetoResult, pareto_test
from .stats.risks import DROP, RiskSpec, dense_reference, shifted_drop
from .sweep import compute_loss_tables

#: macs: multiply-adds per sample executed with dense kernels (what a CPU runs; unstructured
#: pruning does not lower it); nonzero_macs: those with a nonzero weight (what sparse kernels could
#: skip); bytes: the compact export; latency: measured one-thread CPU seconds
OBJECTIVES = ("macs", "nonzero_macs", "bytes", "latency")


@dataclass(frozen=True)
class Knob:
    """One pruning family of the declared space: a criterion, a structure, a scope, and whether
    the pruned model's Linear layers are quantised to int8 (dynamic quantisation)."""

    criterion: str = "magnitude"
    structure: str = "unstructured"
    scope: str = "global"
    quantize: bool = False

    @property
    def label(self) -> str:
        return f"{self.criterion}/{self.structure}{'/' + self.scope if self.scope != 'global' else ''}" + (
            "+int8" if self.quantize else "")


def quantize_linear(net: nn.Module) -> nn.Module:
    """int8 dynamic quantisation of every Linear layer (weights int8, activations quantised on the fly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notices for the quantisation API
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(net), {nn.Linear}, dtype=torch.qint8)


class QuantizedFamily:
    """A pruning family whose pruned models are then int8-quantised (same masks, same λ)."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.structure, self.criterion, self.scope = base.structure, base.criterion, base.scope
        self.pool_size, self.parameter_names = base.pool_size, base.parameter_names
        self.config = {**base.config, "quantize": True}
        self.score_info, self.trajectory_checksum = base.score_info, base.trajectory_checksum

    def sparsity(self, lam: float) -> float:
        return self.base.sparsity(lam)

    def apply(self, params: Mapping[str, torch.Tensor], lam: float) -> dict[str, torch.Tensor]:
        return self.base.apply(params, lam)

    def pruned_model(self, model: nn.Module, lam: float, workspace: nn.Module | None = None) -> nn.Module:
        return quantize_linear(self.base.pruned_model(model, lam))


def _family(model: nn.Module, knob: Knob, seed: int, example: torch.Tensor, score_inputs: Any) -> Any:
    fam = build_family(model, criterion=knob.criterion, scope=knob.scope, structure=knob.structure, seed=seed,
                       include_bias=True, include_norm=knob.structure == "channel",
                       score_inputs=score_inputs, example_inputs=example)
    return QuantizedFamily(fam) if knob.quantize else fam


def _costs(model: nn.Module, fam: Any, knob: Knob, lambdas: Sequence[float], example: torch.Tensor, objective: str,
           batch: int) -> np.ndarray:
    """Cost of every λ of one knob (lower is cheaper)."""
    from . import cost as costs

    base = fam.base if isinstance(fam, QuantizedFamily) else fam
    if objective in ("macs", "nonzero_macs"):  # quantisation changes the precision, not the count
        curve = costs.cost_curve(model, base, lambdas, example)
        return np.asarray(curve[objective], dtype=np.float64)
    out = []
    for lam in lambdas:
        net = fam.pruned_model(model, float(lam))
        if objective == "bytes":
            payload = costs.export_payload(model, base, float(lam))[0] if not knob.quantize else net.state_dict()
            out.append(costs.serialized_bytes(payload))
        else:
            x = torch.zeros((batch, *example.shape[1:]), dtype=example.dtype)
            # Process CPU seconds of a one-thread pass (channels_last, as the runner's latency):
            # unlike wall time it leaves out waiting for a core, so other load on a shared
            # machine does not reorder the configurations.
            out.append(costs.measure_latency(net, x, threads=1, budget_s=0.15, channels_last=True)["cpu_median_s"])
    return np.asarray(out, dtype=np.float64)


@dataclass
class MultiKnobResult:
    """Pareto testing's answer: the certified configuration (or none), its cost, and the front."""

    knobs: list[Knob]
    lambdas: np.ndarray  # (G,)
    configs: list[tuple[int, float]]  # (knob index, λ) per configuration, C = len(knobs) × G
    costs: np.ndarray  # (C,)
    objective: str
    risks: list[RiskSpec]
    delta: float
    pareto: ParetoResult
    pruned: nn.Module | None = field(default=None, repr=False)
    bounds: list[str] = field(default_factory=list)  # the bound each risk was tested with (mean form)

    @property
    def certified(self) -> bool:
        return self.pareto.certified

    @property
    def configuration(self) -> dict[str, Any] | None:
        if not self.certified:
            return None
        k, lam = self.configs[self.pareto.certified_index]
        return {**asdict(self.knobs[k]), "lambda": lam, "label": self.knobs[k].label, "cost": float(self.pareto.certified_cost)}

    def front(self) -> list[dict[str, Any]]:
        """Every configuration on the front, in testing order: its knob, λ, cost, optimisation-part
        risks and p-value, testing-part p-value, and whether it was certified."""
        order = list(self.pareto.order)
        rows = []
        for pos, c in enumerate(order):
            k, lam = self.configs[c]
            where = int(np.flatnonzero(self.pareto.front == c)[0])
            rows.append({"order": pos, "config": int(c), "knob": self.knobs[k].label, "lambda": lam,
                         "cost": float(self.costs[c]),
                         **{f"risk_opt[{r.name}]": float(self.pareto.front_risks[i, where]) for i, r in enumerate(self.risks)},
                         "p_opt": float(self.pareto.opt_pvalues[pos]), "p_test": float(self.pareto.test_pvalues[pos]),
                         "certified": bool(self.pareto.rejected[pos])})
        return rows

    def __repr__(self) -> str:
        head = (f"MultiKnobResult({len(self.knobs)} knobs × {self.lambdas.size} λ, objective={self.objective}, "
                f"risks={[r.name for r in self.risks]}, delta={self.delta:g}, front of {len(self.pareto.front)}")
        if not self.certified:
            return head + ": NOTHING CERTIFIED)"
        c = self.configuration
        return head + f": certified {c['label']} at λ={c['lambda']:g}, {self.objective}={c['cost']:.4g})"


@dataclass
class KnobTables:
    """Every configuration's losses (K risks × C configurations × N points, each risk in its mean
    form on [0, 1]) and cost (C,), with what Pareto testing needs to read them."""

    knobs: list[Knob]
    lambdas: np.ndarray
    configs: list[tuple[int, float]]
    losses: np.ndarray  # (K, C, N)
    costs: np.ndarray  # (C,)
    alphas: list[float]  # in mean form
    bounds: list[str]
    families: list[Any] = field(repr=False)


def knob_tables(
    model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], *, knobs: Sequence[Knob], risks: Sequence[RiskSpec],
    lambdas: Sequence[float], objective: str = "macs", seed: int = 0, batch_size: int = 500,
    score_inputs: torch.Tensor | None = None, progress: bool = False,
) -> KnobTables:
    """One sweep per knob (every risk's loss from the same pass) and every configuration's cost."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not allowed; choose {', '.join(OBJECTIVES)}")
    if not knobs:
        raise OptionError("knobs", list(knobs), "at least one Knob (one pruning family)")
    if not risks:
        raise OptionError("risks", list(risks), "at least one RiskSpec")
    for r in risks:  # before any sweep: a drop bound Pareto testing cannot use
        if r.loss == DROP:
            _mean_bound(r, np.zeros((1, 1)))
    x, y = data
    example = torch.zeros_like(x[:2])
    grid = np.asarray(lambdas, dtype=np.float64)
    names = list(dict.fromkeys(r.table for r in risks))
    per_losses, per_costs, fams = [], [], []
    for i, knob in enumerate(knobs):
        fam = _family(model, knob, seed, example, score_inputs)
        fams.append(fam)
        tables = compute_loss_tables(model, fam, grid, (x, y), [make_loss(n) for n in names], batch_size=batch_size,
                                     progress=progress)
        by_name = {n: t for n, t in zip(names, tables, strict=True)}
        # The drop's reference is the dense float model's own row (computed in every knob's sweep
        # from the same unmodified model), never a knob's first member.
        per_losses.append(np.stack([_mean_form(r, by_name[r.table].losses, by_name[r.table].dense_losses)
                                    for r in risks]))  # (K, G, N)
        per_costs.append(_costs(model, fam, knob, grid, example, objective, batch_size))
        if progress:
            print(f"knob {i + 1}/{len(knobs)} {knob.label}: done")
    losses = np.concatenate(per_losses, axis=1)
    return KnobTables(
        list(knobs), grid, [(k, float(lam)) for k in range(len(knobs)) for lam in grid], losses,
        np.concatenate(per_costs), [(1 + r.alpha) / 2 if r.loss == DROP else r.alpha for r in risks],
        [_mean_bound(r, losses[k]) for k, r in enumerate(risks)], fams,
    )


def pareto_from_tables(model: nn.Module, kt: KnobTables, risks: Sequence[RiskSpec], columns: np.ndarray | None, *,
                       delta: float, objective: str, opt_fraction: float = 0.5, seed: int = 0) -> MultiKnobResult:
    """Pareto testing on the calibration ``columns`` of precomputed knob tables (None: all)."""
    losses = kt.losses if columns is None else kt.losses[:, :, np.asarray(columns)]
    result = pareto_test(losses, kt.costs, kt.alphas, delta, bounds=kt.bounds, opt_fraction=opt_fraction, seed=seed)
    out = MultiKnobResult(kt.knobs, kt.lambdas, kt.configs, kt.costs, objective, list(risks), delta, result,
                          bounds=list(kt.bounds))
    if result.certified:
        k, lam = kt.configs[result.certified_index]
        out.pruned = kt.families[k].pruned_model(model, lam)
    return out


def iid_validate_pareto(kt: KnobTables, *, n_cal: int, reps: int, delta: float, opt_fraction: float = 0.5,
                        seed: int = 0) -> dict[str, Any]:
    """The exact check of the whole procedure on real tables: ``reps`` calibration sets drawn
    i.i.d. from the pool, Pareto testing on each, a violation when the deployed configuration's
    pool risk (the truth under these draws) exceeds some α. Returns coverage, its interval, the
    certified fraction and the median deployed cost."""
    from .stats import clopper_pearson

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9A2E]))
    truth = kt.losses.mean(axis=2)  # (K, C)
    bad = (truth > np.asarray(kt.alphas)[:, None]).any(axis=0)
    violated, costs = [], []
    for r in range(reps):
        idx = rng.integers(0, kt.losses.shape[2], size=n_cal)
        res = pareto_test(kt.losses[:, :, idx], kt.costs, kt.alphas, delta, bounds=kt.bounds,
                          opt_fraction=opt_fraction, seed=seed + r)
        violated.append(res.certified and bool(bad[res.certified_index]))
        costs.append(res.certified_cost if res.certified else np.nan)
    ok = reps - int(np.sum(violated))
    return {"coverage": ok / reps, "coverage_ci": list(clopper_pearson(ok, reps)), "reps": reps,
            "certified_fraction": float(np.mean(np.isfinite(costs))),
            "median_cost": float(np.nanmedian(costs)) if np.isfinite(costs).any() else None}


def certify_pareto(
    model: nn.Module,
    calibration_data: tuple[torch.Tensor, torch.Tensor],
    *,
    knobs: Sequence[Knob],
    risks: Sequence[RiskSpec],
    delta: float = 0.1,
    lambdas: Sequence[float] = tuple(round(0.05 * i, 2) for i in range(20)),
    objective: str = "macs",
    opt_fraction: float = 0.5,
    seed: int = 0,
    batch_size: int = 500,
    score_inputs: torch.Tensor | None = None,
    progress: bool = False,
) -> MultiKnobResult:
    """Certify the cheapest configuration of ``knobs`` × ``lambdas`` whose every risk is at most its
    α, with probability ≥ 1 − δ over the calibration data (Pareto testing; see the module doc).

    ``calibration_data``: (inputs, targets) of the calibration set (exchangeable with deployment
    data, unused in training). ``objective``: ``"macs"`` (multiply-adds per sample executed with
    dense kernels), ``"nonzero_macs"`` (those with a nonzero weight), ``"bytes"`` (compact export)
    or ``"latency"`` (one-thread CPU seconds at ``batch_size``, measured here, on zeros).
    ``score_inputs``: training inputs for data-informed criteria.
    """
    kt = knob_tables(model, calibration_data, knobs=knobs, risks=risks, lambdas=lambdas, objective=objective,
                     seed=seed, batch_size=batch_size, score_inputs=score_inputs, progress=progress)
    return pareto_from_tables(model, kt, risks, None, delta=delta, objective=objective, opt_fraction=opt_fraction,
                              seed=seed)


def _mean_form(spec: RiskSpec, losses: np.ndarray, dense: np.ndarray | None) -> np.ndarray:
    """A risk as a mean loss in [0, 1]: the accuracy drop as x = (d + 1)/2 with d = L(λ) − L_dense,
    ``dense`` the dense model's own label_01 row (N,); per-class risks are not supported here."""
    if spec.per_class:
        raise ValueError("per-class risks are not supported by Pareto testing here; list the classes as risks instead")
    if spec.loss == DROP:
        return shifted_drop(losses, dense_reference({spec.table: dense} if dense is not None else None, spec,
                                                    losses.shape[1]))
    return losses


def _mean_bound(spec: RiskSpec, losses: np.ndarray) -> str:
    from .stats import resolve_bound

    if spec.loss == DROP:
        if spec.bound not in ("auto", "wsr"):
            raise ValueError(f"{spec.name}: Pareto testing tests the accuracy drop in its mean form with WSR; "
                             f"bound={spec.bound!r} is not available there (use auto or wsr)")
        return "wsr"
    return resolve_bound(spec.bound, losses)


def front_figure(result: MultiKnobResult, kt: KnobTables, out_dir: str | Path) -> list[str]:
    """Risk vs cost of every configuration (pool risk of the first risk, one colour per knob), the
    optimisation-part Pareto front in testing order, and the certified configuration."""
    from .figures import save_figure

    return save_figure(_front_plot(result, kt), Path(out_dir), "pareto_front")


def _front_plot(result: MultiKnobResult, kt: KnobTables) -> Any:
    from matplotlib.figure import Figure

    from .figures import styled

    @styled
    def build() -> Figure:
        risk = kt.losses[0].mean(axis=1)  # (C,) in mean form
        alpha = kt.alphas[0]
        fig = Figure(figsize=(5.2, 3.4), layout="constrained")
        ax = fig.add_subplot()
        g = kt.lambdas.size
        for k, knob in enumerate(kt.knobs):
            ax.plot(kt.costs[k * g:(k + 1) * g], risk[k * g:(k + 1) * g], marker=".", ms=3, lw=0.8, label=knob.label)
        front = result.pareto.order
        ax.plot(kt.costs[front], risk[front], "o", mfc="none", mec="k", ms=6, lw=0, label="Pareto front (testing order)")
        for pos, c in enumerate(front[:12]):
            ax.annotate(str(pos + 1), (kt.costs[c], risk[c]), fontsize=6, xytext=(3, -7), textcoords="offset points")
        if result.certified:
            c = result.pareto.certified_index
            ax.plot([kt.costs[c]], [risk[c]], "*", color="C3", ms=13,
                    label=f"certified: {result.configuration['label']}, λ={result.configuration['lambda']:g}")
        shifted = " (drop, shifted to (1+α)/2)" if result.risks[0].loss == DROP else ""
        ax.axhline(alpha, color="C3", ls="--", lw=1, label=f"α = {alpha:g}{shifted}")
        units = {"macs": " (multiply-adds per sample)", "nonzero_macs": " (multiply-adds per sample)",
                 "bytes": " (bytes of the export)",
                 "latency": " (one-thread CPU seconds per batch)"}.get(result.objective, "")
        ax.set_xlabel(f"cost: {result.objective}{units}")
        ax.set_ylabel(f"pool risk ({result.risks[0].name})")
        ax.set_ylim(0, min(1.0, max(3 * alpha, 0.05)))
        ax.set_title(f"Pareto testing over {len(kt.knobs)} knobs × {g} λ (δ = {result.delta:g}; "
                     f"{' and '.join(r.name for r in result.risks)})")
        ax.legend(frameon=False, fontsize=6.5)
        return fig

    return build()


def save_pareto(result: MultiKnobResult, directory: str | Path) -> dict[str, str]:
    """``pareto_front.csv`` (the front in testing order), ``pareto.json`` (the declared space,
    risks, objective and the certified configuration) and, when certified, the pruned model's
    state_dict (``pruned_model.pt``, quantised Linear layers included)."""
    import csv

    from .export import atomic_torch_save
    from .record import write_json

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rows = result.front()
    with open(out / "pareto_front.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["order"])
        w.writeheader()
        w.writerows(rows)
    write_json({"knobs": [asdict(k) for k in result.knobs], "lambdas": result.lambdas.tolist(),
                "objective": result.objective, "risks": [{**asdict(r), "bound": b, "requested_bound": r.bound}
                          for r, b in zip(result.risks, result.bounds or [r.bound for r in result.risks], strict=True)],
                "delta": result.delta,
                "n_opt": result.pareto.n_opt, "n_test": result.pareto.n_test,
                "certified": result.certified, "configuration": result.configuration}, out / "pareto.json")
    paths = {"front": str(out / "pareto_front.csv"), "record": str(out / "pareto.json")}
    if result.pruned is not None:
        atomic_torch_save(result.pruned.state_dict(), out / "pruned_model.pt")
        paths["pruned_model"] = str(out / "pruned_model.pt")
    return paths


__all__ = [
    "Knob", "KnobTables", "MultiKnobResult", "OBJECTIVES", "QuantizedFamily", "certify_pareto", "iid_validate_pareto",
    "front_figure", "knob_tables", "pareto_from_tables", "quantize_linear", "save_pareto",
]
