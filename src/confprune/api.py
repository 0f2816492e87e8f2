"""Certify your own model: ``confprune.certify(model, data, ...)`` in a few lines, no Hydra.

    import confprune
    result = confprune.certify(model, (x_cal, y_cal), loss="label_01", alpha=0.05, delta=0.1)
    print(result)                   # λ̂, sparsity, calibration risk, the claim
    result.save("certified/")       # pruned_model.pt (plain state_dict) + certificate.json

The Hydra runner goes through the same code: it builds the family, computes (or loads) the loss
table, and calls :func:`certify_from_table`, which is also how :func:`certify` ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .calibrate import seeded_order
from .defaults import DEFAULT_ALPHA, DEFAULT_DELTA
from .errors import OptionError
from .export import build_certificate, save_export
from .forward import as_batches
from .forward import tune_allocator as _tune_allocator
from .losses import LOSSES, Loss, make_loss
from .pruning import Family, FamilySpec
from .stats import (
    BOUNDS,
    NOT_CERTIFIED,
    Calibration,
    FwerProcedure,
    get_bound,
    is_binary,
    make_fwer,
)
from .stats.risks import RiskSpec, calibrate_risks, resolve_risks
from .sweep import LossTable, compute_loss_tables

DEFAULT_LAMBDAS = tuple(round(0.01 * i, 2) for i in range(100))  # the paper's grid 0.00 … 0.99

LossLike = str | Loss | Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def resolve_loss(loss: LossLike) -> Loss:
    """A registered loss by name, a :class:`Loss` (e.g. ``make_loss("selective", tau=0.8)``), or
    any callable (dense, pruned, target) → (N,) values in [0, 1] (checked on every batch)."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise OptionError("loss", loss, f"one of {', '.join(LOSSES)}, a Loss or a callable")
        return make_loss(loss)
    if callable(loss):
        name = getattr(loss, "__name__", type(loss).__name__)
        # Whether it is binary is read off the loss table; labels are passed when the data has them.
        return Loss(name=f"custom:{name}", fn=loss, binary=False, labeled=False, task="custom")
    raise OptionError("loss", loss, "a name, a Loss or a callable")


@dataclass
class CertifiedPruning:
    """The result of a certification: λ̂, its sparsity and p-values, the pruned model, the claim.

    ``calibration`` is the LTT result on the calibration columns ``calibration_indices`` of
    ``loss_table`` (shape (G', N)); ``lambdas`` is the full grid fixed in advance (G,).
    """

    calibration: Calibration
    family: Family
    dense_model: nn.Module
    loss: Loss
    loss_table: LossTable
    calibration_indices: np.ndarray
    certificate: dict[str, Any]
    pruned_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    pruned_module: nn.Module | None = field(default=None, repr=False)  # channel: the physically smaller model
    pareto: Any = field(default=None, repr=False)  # several families: the Pareto testing result (front, p-values)

    @property
    def certified(self) -> bool:
        return self.calibration.certified

    @property
    def lambda_index(self) -> int:
        """Index of λ̂ in the grid, or NOT_CERTIFIED (−1)."""
        return self.calibration.lambda_index

    @property
    def lambda_hat(self) -> float | None:
        return float(self.lambdas[self.lambda_index]) if self.certified else None

    @property
    def sparsity(self) -> float | None:
        """Fraction of the pruning pool removed at λ̂ (exact)."""
        return float(self.loss_table.sparsity[self.lambda_index]) if self.certified else None

    @property
    def p_values(self) -> np.ndarray:
        """(G',) p-values of the evaluated grid points."""
        return self.calibration.p_values

    @property
    def lambdas(self) -> np.ndarray:
        """(G,) the grid fixed in advance."""
        return self.loss_table.grid

    @property
    def cal_risk(self) -> float | None:
        return float(self.calibration.risk[self.lambda_index]) if self.certified else None

    @property
    def pruned_model(self) -> nn.Module | None:
        """A copy of the dense model with the certified pruned weights (None if nothing certified)."""
        if self.pruned_state is None or self.lambda_hat is None:
            return None
        return self.family.pruned_model(self.dense_model, self.lambda_hat).eval()

    @property
    def cost(self) -> dict[str, Any] | None:
        """What the dense and the certified model cost (parameters, MACs, bytes, latency), when measured."""
        return self.certificate.get("cost")

    def front(self) -> list[dict[str, Any]]:
        """Pareto testing's front in testing order (several families; empty for one): each point's
        family, λ, cost, optimisation-part risks and p-value, testing-part p-value, and whether it
        is in the certified (rejected) prefix."""
        if self.pareto is None:
            return []
        rec = self.certificate["pareto"]
        rows = []
        for pos, c in enumerate(rec["order"]):
            k, g = divmod(c, len(self.lambdas))
            where = rec["front"].index(c)
            rows.append({"order": pos, "config": c, "knob": rec["labels"][k], "lambda": float(self.lambdas[g]),
                         "cost": rec["costs"][c],
                         **{f"risk_opt[{name}]": risks[where]
                            for name, risks in zip(rec["risk_names"], rec["front_risks_opt"], strict=True)},
                         "p_opt": rec["opt_pvalues"][pos], "p_test": rec["test_pvalues"][pos],
                         "certified": rec["rejected"][pos]})
        return rows

    @property
    def configuration(self) -> dict[str, Any] | None:
        """The certified family's spec, λ̂ and label (and its cost under Pareto testing)."""
        if not self.certified:
            return None
        rec = self.certificate.get("pareto") or {}
        return {**dict(self.family.config), "lambda": self.lambda_hat,
                "label": FamilySpec.from_config(self.family.config).label, "cost": rec.get("certified_cost")}

    def save(self, directory: str | Path) -> dict[str, str]:
        """Write ``certificate.json`` and, when certified, the pruned model into ``directory``
        (see :func:`confprune.export.save_export`)."""
        return save_export(directory, self.certificate, self.pruned_state, self.pruned_module)

    def __repr__(self) -> str:
        cal = self.calibration
        head = (
            f"CertifiedPruning(loss={self.loss.name}, alpha={cal.alpha:g}, delta={cal.delta:g}, "
            f"bound={cal.bound}, fwer={cal.fwer}, n={cal.n}, criterion={self.family.criterion}/{self.family.scope}"
        )
        if not self.certified:
            return head + ",\n  NOTHING CERTIFIED: even the first grid point failed; no pruned model)"
        return (
            f"{head},\n  lambda_hat={self.lambda_hat:.4g}, sparsity={self.sparsity:.4f} of "
            f"{self.family.pool_size} pool parameters, calibration risk={self.cal_risk:.4g}, "
            f"p-value={cal.p_values[cal.lambda_index]:.3g})"
        )


def certify_from_table(
    model: nn.Module,
    family: Family,
    table: LossTable,
    loss: Loss,
    *,
    alpha: float,
    delta: float,
    bound: str = "auto",
    fwer: str | FwerProcedure = "fixed_sequence",
    calibration_indices: np.ndarray | None = None,
    calibration_draw: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None,
    model_info: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    risks: Sequence[RiskSpec] | None = None,
    tables: Mapping[str, LossTable] | None = None,
    labels: np.ndarray | None = None,
    order_seed: int = 0,
    cost_of: Callable[[Family, LossTable, float | None], Mapping[str, Any]] | None = None,
    holdout: np.ndarray | None = None,
) -> CertifiedPruning:
    """LTT on the calibration columns of a computed loss table (shape (G', N)); builds the pruned
    model and the certificate. ``calibration_indices`` (default: every column) are recorded in
    it, in the order sequential bounds (WSR) bet in. ``calibration_draw`` says how they were drawn
    so that a verifier can redraw them (``{"source": "seeded", "pool_size": N, "n_cal": n,
    "seed": s}`` for :func:`confprune.calibrate.deployment_indices`, whose order is random; only
    with ``data_info["dataset"]`` naming a registered dataset, whose pool verify loads itself);
    None means the issuer chose the calibration set, and the certificate says so: its points are
    then put in a seeded random order (:func:`confprune.calibrate.seeded_order` with
    ``order_seed``, recorded), never the data's own order, which a betting bound must not see.
    ``fwer``: a name or a procedure object (e.g. ``MultiStartFixedSequence(n_starts=8)``).

    Rows beyond G' (not evaluated because the sweep stopped early) count as not rejected; with
    fixed-sequence testing that changes nothing, since testing had already stopped there.

    ``risks`` (several at once, :class:`~confprune.stats.risks.RiskSpec`): every risk must pass at a
    grid point (max of the p-values); ``tables`` then maps each risk's loss table name to its
    table (``table`` is the first risk's), and ``labels`` (N,) serve per-class risks; ``alpha``
    and ``bound`` are taken from the risks. Without ``risks``, (``loss``, ``alpha``, ``bound``) is
    the list of one risk: every certificate goes through the same calibration.
    """
    n = table.losses.shape[1]
    cal_idx, calibration_draw = issuer_order(np.arange(n) if calibration_indices is None else calibration_indices,
                                             calibration_draw, data_info, order_seed)
    procedure = make_fwer(fwer)
    if not risks:  # one risk is a list of one
        risks, tables = [RiskSpec(loss.name, alpha, bound)], {loss.name: table}
    arrays = {name: t.losses for name, t in (tables or {}).items()}
    dense = {name: t.dense_losses for name, t in (tables or {}).items() if t.dense_losses is not None}
    calibration, per_risk = calibrate_risks(arrays, risks, cal_idx, delta=delta, fwer=procedure,
                                            n_grid=table.grid.size, labels=labels, dense=dense)
    return certified_result(
        model, family, table, loss, calibration, cal_idx, calibration_draw=calibration_draw, data_info=data_info,
        model_info=model_info, extra=extra, indices_given=calibration_indices is not None, procedure=procedure,
        cost_of=cost_of, holdout=holdout,
        risks=[{**asdict(r), "name": r.name, "requested_bound": asked.bound, "p_values": [float(x) for x in per_risk[r.name]]}
               for r, asked in zip(resolve_risks(arrays, risks, dense), risks, strict=True)],
    )


def certified_result(
    model: nn.Module, family: Family, table: LossTable, loss: Loss | str, calibration: Calibration,
    cal_idx: np.ndarray, *, calibration_draw: Mapping[str, Any] | None, data_info: Mapping[str, Any] | None,
    model_info: Mapping[str, Any] | None, extra: Mapping[str, Any] | None, risks: list[dict[str, Any]] | None,
    indices_given: bool = True, pareto: Any = None, procedure: Any = None,
    cost_of: Callable[[Family, LossTable, float | None], Mapping[str, Any]] | None = None,
    holdout: np.ndarray | None = None,
) -> CertifiedPruning:
    """The pruned model at the decided λ and the certificate, for one family (LTT) or the family
    Pareto testing certified (``pareto``): the one place a result is assembled, and the
    certificate is built once, whole. ``cost_of(family, table, λ̂)`` gives its cost block (None:
    no cost recorded); ``holdout``: the points outside the calibration set whose first-risk
    average at λ̂ is recorded as ``holdout_risk``."""
    loss_obj = make_loss(loss) if isinstance(loss, str) else loss
    certified = calibration.lambda_index != NOT_CERTIFIED
    lam = float(table.grid[calibration.lambda_index]) if certified else None
    extra = dict(extra or {})
    if holdout is not None:
        extra["holdout_risk"] = (float(table.losses[calibration.lambda_index, holdout].mean())
                                 if certified and holdout.size else None)
    if cost_of is not None:
        extra["cost"] = dict(cost_of(family, table, lam))
    pruned = family.export_state(model, lam) if lam is not None else None
    module = family.exported_module(model, lam) if lam is not None else None
    info = {"data_fingerprint": table.data_fingerprint, "points": table.losses.shape[1], **dict(data_info or {})}
    if not indices_given:  # every point, in order: the calibration set is the data
        info.setdefault("calibration_fingerprint", table.data_fingerprint)
    certificate = build_certificate(
        calibration, grid=table.grid, sparsity=table.sparsity, cal_indices=cal_idx,
        calibration_draw=calibration_draw or {"source": "issuer"},
        procedure=procedure if procedure is not None else calibration.fwer, family=family, model=model, pruned=pruned,
        loss={"name": loss_obj.name, "options": dict(loss_obj.params), "binary": bool(is_binary(table.losses)),
              "labeled": loss_obj.labeled, "reads_dense": loss_obj.reads_dense},
        data=info, model_info={"class": type(model).__name__, **dict(model_info or {})},
        sweep={"batch_size": table.batch_size}, extra=extra, risks=risks,
    )
    _check_commitment(certificate)
    return CertifiedPruning(calibration, family, model, loss_obj, table, cal_idx, certificate, pruned, module, pareto)


def _check_commitment(certificate: Mapping[str, Any]) -> None:
    """A committed draw must be the one the certificate's own fields commit to: checked before the
    certificate leaves the issuer, as verify will check it (a wiring slip fails here, not later)."""
    from .commitment import COMMITTED, check_draw

    if (certificate.get("calibration") or {}).get("source") != COMMITTED:
        return
    data = certificate["data"]
    failed = [f"{name}: {detail}" for name, ok, detail in
              check_draw(certificate, data["data_fingerprint"], int(data["points"])) if not ok]
    if failed:
        raise ValueError("the calibration draw does not match the certificate it would issue: " + "; ".join(failed))


def issuer_order(indices: np.ndarray, draw: Mapping[str, Any] | None, data_info: Mapping[str, Any] | None,
                 order_seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The calibration points in the order a procedure may use, and the draw record: a seeded draw
    from a registered dataset as drawn; any other set (the issuer's) in a seeded random order that
    does not depend on the data (a betting bound, or Pareto testing's optimisation/testing split,
    must not see an order the issuer arranged)."""
    _check_seeded_draw(draw, data_info)
    idx = np.asarray(indices, dtype=np.int64)
    if draw is not None:  # a committed draw, in its drawn order
        return idx, dict(draw)
    return seeded_order(idx, order_seed), {**dict(draw or {"source": "issuer"}), "order": "seeded_order",
                                          "order_seed": int(order_seed)}


def _check_seeded_draw(draw: Mapping[str, Any] | None, data_info: Mapping[str, Any] | None) -> None:
    """A drawn calibration set is a claim that the points were drawn from a pool the verifier can
    load by itself, by a seed derived from a commitment (:mod:`confprune.commitment`): only from a
    registered dataset the certificate names (the Hydra runner's). A caller's own points are an
    issuer-chosen set; a seed the caller names could have been searched after seeing the losses."""
    if draw is None:
        return
    from .commitment import COMMITTED
    from .data import DATASETS

    if draw.get("source") != COMMITTED:
        raise OptionError("calibration_draw", dict(draw), f"None (an issuer-chosen set, put in a seeded order) or a "
                          f"draw from confprune.commitment.committed_draw (source {COMMITTED!r}); a seed of the "
                          "caller's choosing could have been searched after seeing the losses")
    name = ((data_info or {}).get("dataset") or {}).get("name")
    if name not in DATASETS:
        raise OptionError("calibration_draw", {k: draw[k] for k in ("source", "pool_size", "n_cal") if k in draw},
                          "a committed draw only from a registered dataset named in "
                          f"data_info['dataset'] ({', '.join(sorted(DATASETS))}), which verify loads itself; for your "
                          "own points leave calibration_draw=None (an issuer-chosen set, in a seeded order)")


def certify(
    model: nn.Module,
    calibration_data: Any,
    *,
    loss: LossLike = "label_01",
    alpha: float = DEFAULT_ALPHA,
    delta: float = DEFAULT_DELTA,
    bound: str = "auto",
    fwer: str | FwerProcedure = "fixed_sequence",
    criterion: str = "magnitude",
    scope: str = "global",
    structure: str = "unstructured",
    include_bias: bool = FamilySpec.include_bias,
    include_norm: bool = FamilySpec.include_norm,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    batch_size: int = 500,
    seed: int = 0,
    score_inputs: torch.Tensor | None = None,
    trajectory: Mapping[str, torch.Tensor] | None = None,
    criterion_options: Mapping[str, Any] | None = None,
    measure_cost: bool = True,
    risks: Sequence[RiskSpec] | None = None,
    progress: bool = False,
    tune_allocator: bool = True,
) -> CertifiedPruning:
    """Certify a pruning ratio for ``model`` on held-out ``calibration_data``.

    Parameters
    ----------
    model : the trained dense model (any ``nn.Module``; device follows the model).
    calibration_data : a DataLoader with a fixed order (shuffle=False) yielding ``x`` or ``(x, y)``,
        a tensor of inputs, or a tuple ``(inputs, targets)``. Must be exchangeable with the data the
        model will see, and must not have been used to train the model or pick the criterion.
    loss : ``"label_01"``, ``"disagreement"`` (no labels needed), ``"selective"``, ``"tv_distance"``,
        a :class:`~confprune.losses.Loss` with options (``make_loss("selective", tau=0.8)``), or a
        callable ``(dense_out, pruned_out, target) -> (N,)`` tensor in [0, 1].
    alpha, delta : risk level and error budget: P(risk(λ̂) ≤ alpha) ≥ 1 − delta (defaults: the paper's
        α = 0.03, δ = 0.05, as the Hydra config; :mod:`confprune.defaults`).
    bound : ``"auto"`` (binomial for binary losses, else Hoeffding–Bentkus), or one of
        binomial, hoeffding, bentkus, hb, wsr.
    fwer : a name — fixed_sequence (default), bonferroni, holm, multistart — or a procedure
        object with its options (``confprune.stats.MultiStartFixedSequence(n_starts=8)``).
    criterion, scope, include_bias, include_norm, criterion_options : the pruning family (fixed
        before calibration), with :class:`~confprune.pruning.FamilySpec`'s defaults (the Hydra
        ``pruning`` group's too): the pool is every trainable parameter, normalisation parameters
        (BatchNorm, LayerNorm, GroupNorm) included as in the paper's code; ``include_norm=False``
        leaves them out (zeroing a scale γ silences a whole channel). Criteria: magnitude, random, mu (needs ``trajectory``: Welford statistics from
        training, see ``confprune.pruning.trajectory.WelfordTracker``; options ``eps``, ``inert_rel``
        (default 0: weights that never moved are pruned first; None: the plain reading),
        ``eps_rel``, ``sigma``), sipp and
        sipp_hybrid (need ``score_inputs``: a batch of *training* inputs, never calibration data;
        option ``delta_failure`` for the hybrid).
    structure : ``"unstructured"`` (single weights) or ``"channel"`` (whole output channels and
        units, coupled layers handled; criteria ``l1``, ``l2``, ``activation`` (needs
        ``score_inputs``), ``random``): the certified model is then physically smaller.
    lambdas : the increasing grid in [0, 1), fixed in advance (default 0.00, 0.01, …, 0.99).
    seed : seeds the random criterion and the calibration points' random order (recorded in the
        certificate): sequential bounds (WSR) bet in that order, never in the data's own order.
    measure_cost : record the dense and certified model's parameters, MACs, export bytes and CPU
        latency (batch 1 and ``batch_size``) in the certificate (``result.cost``).
    risks : several risks at once instead of (``loss``, ``alpha``, ``bound``): a list of
        :class:`~confprune.stats.risks.RiskSpec`, e.g. ``[RiskSpec("label_01", 0.03),
        RiskSpec("disagreement", 0.02)]``, ``RiskSpec("accuracy_drop", 0.01)`` (the drop relative to
        the dense model, exact trinomial test or ``bound="wsr"``) or ``RiskSpec("label_01", 0.05,
        per_class=True)``; a grid point passes when every risk's null is rejected. All tables come
        from one pass of the network.
    tune_allocator : first raise glibc's mmap and trim thresholds for this process
        (:func:`confprune.forward.tune_allocator`, what the runner does): CNN sweeps on CPU ran
        up to 2× faster and much steadier (benchmarks/README.md). Process-wide; False leaves
        the allocator alone (so does ``CONFPRUNE_TUNE_MALLOC=0``).
    """
    for key, value in (("alpha", alpha), ("delta", delta)):
        if not 0 < value < 1:
            raise OptionError(key, value, "a number in the open interval (0, 1)")
    if bound != "auto" and bound not in BOUNDS:
        raise OptionError("bound", bound, f"auto or one of {', '.join(BOUNDS)}")
    procedure = make_fwer(fwer)
    if any(p.is_meta for p in model.parameters()):
        raise OptionError("model", type(model).__name__, "a model with real weights (its parameters are on the meta "
                          "device: load a checkpoint into it first, e.g. with load_state_dict(..., assign=True))")
    grid = np.asarray(lambdas, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or np.any(np.diff(grid) <= 0) or grid[0] < 0 or grid[-1] >= 1:
        raise OptionError("lambdas", list(lambdas), "a strictly increasing grid in [0, 1)")
    loss_obj = resolve_loss(loss)
    if bound != "auto" and get_bound(bound).binary_only and loss_obj.task != "custom" and not loss_obj.binary:
        raise OptionError("bound", bound, f"a bound for any loss in [0, 1]: {loss_obj.name!r} is not a binary loss")
    if tune_allocator:
        _tune_allocator()
    was_training = model.training
    try:  # the caller's train/eval mode is restored, whatever happens
        example, targets = next(iter(as_batches(calibration_data, batch_size)()))  # only the shape is used
        if loss_obj.task == "custom":  # a callable sees the targets whenever the data has them
            loss_obj = dataclasses.replace(loss_obj, labeled=targets is not None)
        spec = FamilySpec(criterion=criterion, structure=structure, scope=scope, include_bias=include_bias,
                          include_norm=include_norm, seed=seed, options=dict(criterion_options or {}))
        family = spec.build(model, trajectory=trajectory, score_inputs=score_inputs,
                            example_inputs=torch.zeros_like(example[:2]))
        risks = list(risks or [RiskSpec(loss_obj.name, alpha, bound)])  # one risk is a list of one
        names = list(dict.fromkeys(r.table for r in risks))
        computed = compute_loss_tables(model, family, grid, calibration_data,
                                       [loss_obj if n == loss_obj.name else make_loss(n) for n in names],
                                       batch_size=batch_size, progress=progress)
        tables = dict(zip(names, computed, strict=True))
        labels = None
        if any(r.per_class for r in risks):
            ys = [y for _, y in as_batches(calibration_data, batch_size)()]
            if any(y is None for y in ys):
                raise OptionError("risks", [r.name for r in risks], "per-class risks with data that has targets")
            labels = torch.cat(ys).cpu().numpy()
        first = risks[0].table
        result = certify_from_table(model, family, tables[first], loss_obj if first == loss_obj.name else make_loss(first),
                                    alpha=risks[0].alpha, delta=delta, fwer=procedure, risks=risks, tables=tables,
                                    labels=labels, order_seed=seed,
                                    cost_of=(lambda fam, _table, lam: certified_cost(
                                        model, fam, lam, example, batches=sorted({1, batch_size})))
                                    if measure_cost else None)
        return result
    finally:
        model.train(was_training)


def certified_cost(model: nn.Module, family: Family, lam: float | None, example: torch.Tensor,
                   batches: Sequence[int] = (1,)) -> dict[str, Any]:
    """The cost block of a certificate: parameters, MACs, export bytes and measured CPU latency of
    the dense model and of the model certified at ``lam`` (None: nothing certified)."""
    from . import cost as costs

    x = torch.zeros_like(example[:1])
    dense = {**costs.model_cost(model, family, None, x), "latency": costs.latency_at(model, family, None, x, batches)}
    deploy = None
    if lam is not None:
        deploy = {**costs.model_cost(model, family, lam, x), "latency": costs.latency_at(model, family, lam, x, batches)}
    return costs.cost_block(dense, deploy, costs.machine())
