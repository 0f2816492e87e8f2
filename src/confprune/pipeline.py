"""The pipeline behind ``python -m confprune.run`` as named stages (plain functions, no Hydra).

    check → load data → dense model → pruning family → loss table → split validation →
    deployment certificate and export → figures → summary

Each stage is a function with typed inputs and outputs; :func:`run` reads as that list. Heavy
imports (torch, SciPy) live here and not in ``confprune.run``, so that a Hydra launcher's parent
process composes and dispatches jobs without importing them; matplotlib is imported only when a
run draws figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .api import CertifiedPruning, certify_from_table
from .calibrate import FixedSequenceStop, deployment_indices
from .commitment import commit_families, committed_draw
from .cost import CERTIFICATE_COST_KEYS
from .data import TaskData, load_dataset
from .errors import ConfigError
from .forward import tune_allocator
from .losses import Loss, make_loss
from .multiknob import (
    ParetoTables,
    certify_pareto_from_tables,
    iid_validate_pareto,
    pareto_tables,
    write_front,
)
from .pruning import Family, FamilySpec
from .record import (
    Deployment,
    GridInfo,
    LambdaHat,
    RunSummary,
    SparsityHat,
    Throughput,
    artifact_checksums,
    write_splits,
    write_summary,
)
from .schema import Config, check_config, family_specs
from .stats import (
    IidValidation,
    Splits,
    SplitValidation,
    draw_iid_calibration,
    draw_splits,
    make_fwer,
)
from .stats.risks import RiskSpec, iid_validate_risks, validate_risks
from .sweep import LossTable, cached_loss_tables, compute_loss_tables, loss_table_payload
from .train import cached_dense_metrics, train_or_load

log = logging.getLogger("confprune")


# --------------------------------------------------------------------------------------------
# What the stages pass on


@dataclass
class DenseModel:
    """The trained (or cached) dense model and its quality on the pool."""

    model: nn.Module
    key: str  # cache key of the checkpoint (what determines it: model, dataset, trainer, seed)
    checksum: str  # sha256 of its weights: derived caches (loss tables, metrics) are keyed by it
    path: Path  # the checkpoint
    from_cache: bool
    train_seconds: float
    trajectory: dict[str, torch.Tensor]  # M&U statistics (empty unless tracked)
    metrics: dict[str, float]  # accuracy; Dice and IoU for segmentation
    metrics_from_cache: bool


@dataclass
class CalibrationDraws:
    """The random calibration sets of a run: validation splits, i.i.d. draws and the deployment set."""

    splits: Splits  # random calibration/test splits of the pool
    iid: Splits  # calibration sets drawn with replacement (the exact check)
    deploy: np.ndarray  # (n_cal,) pool indices of the deployment calibration set, in draw order
    draw: dict[str, Any]  # how ``deploy`` was drawn, for the certificate (a verifier redraws it)


@dataclass
class Sweep:
    """What the sweep computed for every family: the loss tables (table name → LossTable, over the
    pool and the grid), and, for several families, the Pareto tables (mean-form losses and costs)."""

    specs: list[FamilySpec]
    families: list[Family]
    tables: list[dict[str, LossTable]]
    loss: Loss  # the first risk's loss (with the loss group's options)
    risks: list[RiskSpec]  # one risk is a list of one
    from_cache: bool  # every family's tables came from the cache
    pareto: ParetoTables | None = None  # several families


@dataclass
class Validation:
    """LTT (one family) on every random split (test risk at λ̂) and on i.i.d. draws (exact pool
    risk); Pareto testing (several) on i.i.d. draws (``pareto``: coverage, certified fraction,
    median deployed cost) and each family certified alone on the deployment set (``single``)."""

    splits: SplitValidation | None
    iid: IidValidation | None
    pareto: dict[str, Any] | None = None
    single: list[dict[str, Any]] | None = None


@dataclass
class RunResult:
    """What :func:`run` returns — the summary it wrote, the figures it drew (stem → PNG path), and
    what it computed, handed forward so that nothing downstream (the tracker) re-reads the run's
    files or re-draws its splits: the certificate, one family's loss table and the validation
    splits' calibration masks (None for several families)."""

    summary: RunSummary
    figures: dict[str, str] = field(default_factory=dict)
    certificate: dict[str, Any] | None = None
    table: LossTable | None = None
    cal_mask: np.ndarray | None = None


class StageTimer:
    """``with timer("sweep"): ...`` records ``sweep_s`` seconds in ``timer.seconds``, and
    ``sweep_peak_mb``: the process's peak resident memory (MiB) once the stage is done — the
    peak is monotone, so the first stage whose value jumps is the one that needed it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[f"{stage}_s"] = time.perf_counter() - t
            self.seconds[f"{stage}_peak_mb"] = peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


# --------------------------------------------------------------------------------------------
# The run


def run(cfg: Config, output_dir: str | Path, config_hash: str = "",
        on_train_step: Callable[[int, dict[str, float]], None] | None = None) -> RunResult:
    """Run every stage for one configuration; writes every artifact into ``output_dir``.
    One pruning family (``pruning``) is certified with Learn-Then-Test, several (``knobs``) with
    Pareto testing: the same stages, one certificate. ``on_train_step(step, metrics)`` sees every
    optimizer step when the model is trained (a tracker's training curves); nothing when it comes
    from the cache."""
    t_start = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = np.asarray(check(cfg))
    if cfg.sweep.tune_allocator:
        tune_allocator()
    seed_everything(cfg)
    timer = StageTimer()
    with timer("data"):
        data = load_data(cfg)
    with timer("model"):
        dense = dense_model(cfg, data, on_train_step)
    specs = family_specs(cfg)
    families = [pruning_family(cfg, dense, data, spec) for spec in specs]
    risks = risk_specs(cfg)
    loss = first_loss(cfg, risks)
    draws = calibration_draws(cfg, data, commitment(cfg, dense, families, specs, risks, loss, data, grid))
    with timer("sweep"):
        swept = [family_tables(cfg, dense, fam, spec, data, loss, risks, grid, draws)
                 for fam, spec in zip(families, specs, strict=True)]
        sweep = Sweep(specs, families, [t for t, _ in swept], loss, risks, all(c for _, c in swept))
        sweep.pareto = pareto_stage(cfg, dense, sweep, data)
    files = {}
    if sweep.pareto is None:
        sweep.tables[0][loss.name].save(out / "losses.npz", timing=False)  # byte-reproducible: timings in summary.json
        files["losses"] = str(out / "losses.npz")
    with timer("validation"):
        validation = validate(cfg, sweep, draws, data)
    if validation.splits is not None:
        write_splits(out / "splits.csv", split_columns(sweep.tables[0][loss.name], validation.splits))
        files["splits"] = str(out / "splits.csv")
    profile: dict[str, Any] = {}  # the full cost profile (curve, latency points) for figures and the summary

    def cost_of(family: Family, table: LossTable, lam: float | None) -> dict[str, Any]:
        with timer("cost"):
            profile.update(cost_profile(cfg, dense, family, table, lam, data))
        return {k: profile[k] for k in CERTIFICATE_COST_KEYS}

    result = deployment_certificate(cfg, dense, sweep, data, draws, cost_of)
    cost = profile
    if cfg.export:
        files.update(result.save(out))
    if sweep.pareto is not None:
        files["front"] = write_front(result, out / "pareto_front.csv")
    figures: dict[str, str] = {}
    if cfg.figures:
        with timer("figures"):
            figures = draw_figures(cfg, dense.model, sweep, validation, result, data, cost, out / "figures")
    timing = {"data_s": timer.seconds["data_s"], "train_s": dense.train_seconds, **timer.seconds}
    timing["total_s"] = time.perf_counter() - t_start
    files = {**files, **{f"figure_{k}": v for k, v in figures.items()}}
    written = list(dict.fromkeys([*files.values(), *(str(Path(p).with_suffix(f".{ext}")) for p in figures.values()
                                                     for ext in cfg.figure_formats)]))
    summary = summarise(cfg, config_hash, data, dense, sweep, validation, result, cost, timing, files, out,
                        artifact_checksums(out, written))
    write_summary(summary, out)
    one = sweep.pareto is None
    return RunResult(summary, figures, result.certificate, sweep.tables[0][loss.name] if one else None,
                     draws.splits.cal_mask if one else None)


# --------------------------------------------------------------------------------------------
# Stages


def risk_specs(cfg: Config) -> list[RiskSpec]:
    """The risks at the door: ``calibration.risks``, or the list of one risk, ``loss`` at
    ``calibration.alpha`` with ``bound``."""
    if cfg.calibration.risks:
        return [RiskSpec(**r) for r in cfg.calibration.risks]
    return [RiskSpec(cfg.loss["name"], cfg.calibration.alpha, cfg.bound.name)]


def first_loss(cfg: Config, risks: list[RiskSpec]) -> Loss:
    """The first risk's loss, with the ``loss`` group's options when it is that loss."""
    return make_loss(**cfg.loss) if risks[0].table == cfg.loss["name"] else make_loss(risks[0].table)


def check(cfg: Config) -> list[float]:
    """All start-up checks (no data loaded, nothing trained); returns the λ grid."""
    return check_config(cfg)


def seed_everything(cfg: Config) -> None:
    if cfg.sweep.num_threads:
        torch.set_num_threads(cfg.sweep.num_threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)


def load_data(cfg: Config) -> TaskData:
    data = load_dataset(cfg.dataset)
    need = cfg.calibration.n_cal + cfg.calibration.n_test
    if need > data.pool_size:  # datasets whose pool size is known only after listing files
        raise ConfigError("calibration.n_cal + calibration.n_test", need, f"≤ pool size {data.pool_size}")
    return data


def dense_model(cfg: Config, data: TaskData,
                on_train_step: Callable[[int, dict[str, float]], None] | None = None) -> DenseModel:
    """Train the dense model or load it from the cache; its metrics on the pool (cached too)."""
    trained = train_or_load(cfg.model, cfg.dataset, cfg.trainer, cfg.seed, data, cfg.paths.cache_dir,
                            progress=cfg.sweep.progress, on_step=on_train_step)
    model = trained.model.to(cfg.sweep.device)
    checksum = trained.meta["checksum"]
    metrics, metrics_cached = cached_dense_metrics(
        model, checksum, data, cfg.paths.cache_dir, cfg.sweep.device, cfg.trainer.eval_batch_size
    )
    log.info("dense model on the pool: %s (model %s, metrics %s)", metrics,
             "pretrained, not trained here" if "file_sha256" in trained.meta else "cached" if trained.from_cache
             else "trained", "cached" if metrics_cached else "computed")
    return DenseModel(model, trained.key, checksum, trained.path, trained.from_cache, trained.train_seconds,
                      trained.trajectory, metrics, metrics_cached)


def pruning_family(cfg: Config, dense: DenseModel, data: TaskData, spec: FamilySpec) -> Family:
    """Score and rank the pruning pool once. Data-informed criteria draw their batch from the
    training set (never the pool), on the sweep's device."""

    def train_inputs() -> torch.Tensor:
        return data.train_inputs.to(cfg.sweep.device)

    return spec.build(dense.model, trajectory=dense.trajectory, train_inputs=train_inputs,
                      example_inputs=torch.zeros_like(data.pool_inputs[:2]).to(cfg.sweep.device))


def commitment(cfg: Config, dense: DenseModel, families: list[Family], specs: list[FamilySpec],
               risks: list[RiskSpec], loss: Loss, data: TaskData, grid: np.ndarray) -> dict[str, Any]:
    """What precedes calibration, committed before any calibration loss is seen: the deployment
    draw (and Pareto testing's split) come from its digest, not from a seed of the issuer's
    choosing (:mod:`confprune.commitment`)."""
    pareto = len(specs) > 1  # as pareto_stage decides
    return commit_families(
        dense_checksum=dense.checksum, pool_fingerprint=data.pool_fingerprint(), pool_size=data.pool_size,
        n_cal=cfg.calibration.n_cal, risks=risks, loss_options=loss.params, delta=cfg.calibration.delta,
        configs=[spec.config for spec in specs] if pareto else [dict(families[0].config)],
        procedure=make_fwer(**cfg.fwer), grid=grid, opt_fraction=cfg.knobs.opt_fraction if pareto else 0.5,
    )


def calibration_draws(cfg: Config, data: TaskData, committed: dict[str, Any]) -> CalibrationDraws:
    """The validation splits and i.i.d. draws (the finite-pool checks, from ``calibration.split_seed``)
    and the deployment calibration set, drawn from the commitment's digest."""
    cal = cfg.calibration
    n_pool = data.pool_size
    draw = committed_draw(committed)
    return CalibrationDraws(
        splits=draw_splits(n_pool, cal.n_cal, cal.n_test, cal.n_splits, cal.split_seed),
        iid=draw_iid_calibration(n_pool, cal.n_cal, cal.n_splits, cal.split_seed),
        deploy=deployment_indices(n_pool, cal.n_cal, draw["seed"]),
        draw=draw,
    )


def loss_table(
    cfg: Config, dense: DenseModel, family: Family, spec: FamilySpec, data: TaskData, loss: Loss, grid: np.ndarray,
    draws: CalibrationDraws,
) -> tuple[LossTable, bool]:
    """The per-sample loss table over the pool. Complete tables are cached under the weights'
    checksum, the pool's fingerprint, the loss, the family and the grid, and shared by every job
    with the same ones; with ``sweep.share_losses`` the task's other losses (default options) come
    out of the same pass of the network and are cached too, so a multirun over losses runs the
    network once. An early-stopped sweep is not cached."""
    cal = cfg.calibration
    pool = (data.pool_inputs, data.pool_targets)

    def sweep(losses: list[Loss], stop: Any = None) -> list[LossTable]:
        return compute_loss_tables(dense.model, family, grid, pool, losses, batch_size=cfg.sweep.batch_size,
                                   stop=stop, progress=cfg.sweep.progress)

    if cfg.sweep.early_stop:
        stop = FixedSequenceStop([draws.splits, draws.iid], draws.deploy, alpha=cal.alpha, delta=cal.delta,
                                 bound=cfg.bound.name)
        return sweep([loss], stop)[0], False
    losses = [loss, *(companion_losses(loss, data.task) if cfg.sweep.share_losses else [])]

    device = torch.device(cfg.sweep.device).type
    return cached_loss_tables(cfg.paths.cache_dir, [loss_table_payload(dense.checksum, data.pool_fingerprint(), one,
                                                                       spec.config, grid, device) for one in losses],
                              lambda wanted: sweep([losses[i] for i in wanted]))


def family_tables(
    cfg: Config, dense: DenseModel, family: Family, spec: FamilySpec, data: TaskData, loss: Loss,
    risks: list[RiskSpec], grid: np.ndarray, draws: CalibrationDraws,
) -> tuple[dict[str, LossTable], bool]:
    """One family's loss tables: the first risk's and every other risk's (from the cache, or one
    pass of the network with ``sweep.share_losses``); whether the first came from the cache."""
    table, from_cache = loss_table(cfg, dense, family, spec, data, loss, grid, draws)
    tables = {loss.name: table}
    for r in risks:
        if r.table not in tables:
            tables[r.table] = loss_table(cfg, dense, family, spec, data, make_loss(r.table), grid, draws)[0]
    return tables, from_cache


def pareto_stage(cfg: Config, dense: DenseModel, sweep: Sweep, data: TaskData) -> ParetoTables | None:
    """Several families: every configuration's mean-form losses and cost (None for one family)."""
    if len(sweep.specs) == 1:
        return None
    return pareto_tables(dense.model, sweep.specs, sweep.families, sweep.tables, sweep.risks,
                         objective=cfg.knobs.objective, example=torch.zeros_like(data.pool_inputs[:2]),
                         batch_size=cfg.sweep.batch_size)


def companion_losses(loss: Loss, task: str) -> list[Loss]:
    """The task's other registered losses, with their default options (computed in the same pass)."""
    from .losses import LOSSES

    return [spec.make() for name, spec in LOSSES.items()
            if spec.task == task and not (name == loss.name and spec.make().params == loss.params)]


def validate(cfg: Config, sweep: Sweep, draws: CalibrationDraws, data: TaskData) -> Validation:
    """The procedure checked on the run's own tables: LTT on random splits and i.i.d. draws (one
    family); Pareto testing on i.i.d. draws and each family alone on the deployment set (several)."""
    from .multiknob import single_family_costs

    cal = cfg.calibration
    if sweep.pareto is not None:
        check = iid_validate_pareto(sweep.pareto, n_cal=cal.n_cal, reps=cfg.knobs.validation_reps, delta=cal.delta,
                                    opt_fraction=cfg.knobs.opt_fraction, seed=cal.split_seed)
        return Validation(None, None, check, single_family_costs(sweep.pareto, draws.deploy, delta=cal.delta))
    return split_validation(cfg, sweep.risks, sweep.tables[0], draws, data)


def split_validation(cfg: Config, risks: list[RiskSpec], tables: dict[str, LossTable], draws: CalibrationDraws,
                     data: TaskData | None = None) -> Validation:
    """LTT on every random split (test risk at λ̂) and on i.i.d. draws (exact pool risk); with
    several risks, a split passes only if every risk does."""
    cal = cfg.calibration
    procedure, n_grid = make_fwer(**cfg.fwer), next(iter(tables.values())).grid.size
    arrays = {k: t.losses for k, t in tables.items()}
    dense = {k: t.dense_losses for k, t in tables.items() if t.dense_losses is not None}
    labels = _labels(data)
    splits = validate_risks(arrays, risks, draws.splits, delta=cal.delta, fwer=procedure, n_grid=n_grid,
                            labels=labels, keep_pvalues=True, dense=dense)
    iid = iid_validate_risks(arrays, risks, draws.iid, delta=cal.delta, fwer=procedure, n_grid=n_grid,
                             labels=labels, dense=dense)
    return Validation(splits, iid)


def split_columns(table: LossTable, validation: SplitValidation) -> dict[str, np.ndarray]:
    """The columns of ``splits.csv`` (one row per split)."""
    at = np.maximum(validation.lambda_index, 0)
    return {
        "split": np.arange(validation.n_splits),
        "lambda_hat": np.where(validation.certified, table.lambdas[at], np.nan),
        "sparsity_hat": np.where(validation.certified, table.sparsity[at], np.nan),
        "cal_risk": validation.cal_risk,
        "test_risk": validation.test_risk,
        "violated": validation.violated,
        "certified": validation.certified,
    }


def _labels(data: TaskData | None) -> np.ndarray | None:
    """Pool labels for per-class risks (classification pools only)."""
    if data is None or data.task != "classification":
        return None
    return data.pool_targets.cpu().numpy()


def deployment_certificate(cfg: Config, dense: DenseModel, sweep: Sweep, data: TaskData,
                           draws: CalibrationDraws, cost_of: Callable[..., dict[str, Any]]) -> CertifiedPruning:
    """The deployment calibration set: LTT (one family) or Pareto testing (several) — the certified
    λ̂ (and family), the pruned model and the one certificate, with its cost (``cost_of``) and
    the risk on the points outside the calibration set."""
    cal = cfg.calibration
    holdout = np.setdiff1d(np.arange(data.pool_size), draws.deploy)
    info = {
        "data_info": {"dataset": dict(cfg.dataset), "description": data.description, "synthetic": data.synthetic,
                      "calibration_fingerprint": data.pool_fingerprint(draws.deploy)},
        "model_info": {"name": cfg.model["name"], "config": dict(cfg.model), "cache_key": dense.key,
                       "checkpoint": str(dense.path), "seed": cfg.seed, **_file_identity(cfg, dense)},
        "extra": {"holdout_size": int(holdout.size)},
        "calibration_draw": draws.draw,
        "cost_of": cost_of,
        "holdout": holdout,
    }
    if sweep.pareto is not None:
        result = certify_pareto_from_tables(dense.model, sweep.pareto, draws.deploy, delta=cal.delta,
                                            opt_fraction=cfg.knobs.opt_fraction, seed=draws.draw["seed"], **info)
    else:
        result = certify_from_table(
            dense.model, sweep.families[0], sweep.tables[0][sweep.loss.name], sweep.loss, alpha=cal.alpha,
            delta=cal.delta, bound=cfg.bound.name, fwer=make_fwer(**cfg.fwer), calibration_indices=draws.deploy,
            risks=sweep.risks, tables=sweep.tables[0], labels=_labels(data), **info,
        )
    return result


def _file_identity(cfg: Config, dense: DenseModel) -> dict[str, str]:
    """A pretrained model's file SHA-256 (the user's checkpoint is its identity; verify compares)."""
    from .models import PRETRAINED
    from .models.checkpoint import file_sha256

    return {"file_sha256": file_sha256(dense.path)} if cfg.model["name"] in PRETRAINED else {}


def cost_profile(
    cfg: Config, dense: DenseModel, family: Family, table: LossTable, lam_hat: float | None, data: TaskData,
) -> dict[str, Any]:
    """What the pruned models cost: parameters and MACs at every evaluated λ (the curve),
    parameters, MACs and export bytes of the dense and the certified model, and measured CPU
    latency of the dense model, the certified one and a few grid points (cfg.cost). Curves and
    latencies are cached per model and family (latencies also per machine and threads)."""
    from . import cost as costs

    example = torch.zeros_like(data.pool_inputs[:1])

    def json_cached(kind: str, payload: dict[str, Any], compute: Any) -> Any:
        return costs.cached_cost(cfg.paths.cache_dir, kind, dense.checksum, family.config, example, payload, compute)

    lambdas = [float(x) for x in table.lambdas]
    curve = json_cached("cost_curve", {"lambdas": lambdas},
                        lambda: costs.cost_curve(dense.model, family, lambdas, example))
    dense_cost = costs.model_cost(dense.model, family, None, example)
    deploy = costs.model_cost(dense.model, family, lam_hat, example) if lam_hat is not None else None
    machine = costs.machine()
    latency: list[dict[str, Any]] = []
    if cfg.cost.latency:
        batches = sorted({*cfg.cost.latency_batches, cfg.sweep.batch_size})
        n = len(lambdas)
        picks = [round(i * (n - 1) / (cfg.cost.latency_points + 1)) for i in range(1, cfg.cost.latency_points + 1)]
        points: list[float | None] = [None, *([lam_hat] if lam_hat is not None else []),
                                      *(lambdas[i] for i in sorted(set(picks)))]
        for lam in dict.fromkeys(points):  # the dense model, λ̂, grid points; each once
            measured = json_cached("latency", {"lambda": lam, "batches": batches, "machine": machine,
                                               "threads": 1, "method": "one intra-op thread, channels_last"},
                                   lambda lam=lam: costs.latency_at(dense.model, family, lam, example, batches))
            latency.append({"lambda": lam, **measured})
        dense_cost["latency"] = latency[0]
        if deploy is not None:
            deploy["latency"] = latency[1]
    return {**costs.cost_block(dense_cost, deploy, machine), "curve": curve, "latency": latency,
            "kind": family.cost_kind}


def draw_figures(
    cfg: Config, model: nn.Module, sweep: Sweep, validation: Validation, result: CertifiedPruning, data: TaskData,
    cost: dict[str, Any], fig_dir: Path,
) -> dict[str, str]:
    """The run's figures (PNG + PDF), each titled with the model, the data (and whether it is
    synthetic), the pruning family, loss, bound, FWER, α and δ; returns stem → PNG path. Several
    families: the Pareto front, then the certified family's figures."""
    from . import figures  # matplotlib: only when drawing
    from .multiknob import front_figure

    drawn_files: dict[str, str] = {}
    if sweep.pareto is not None:
        what = f"{cfg.model['name']} on {cfg.dataset['name']}{' (synthetic)' if data.synthetic else ''}"
        drawn_files["pareto_front"] = front_figure(sweep.pareto, result, fig_dir, what, list(cfg.figure_formats))[0]
    family, table, lam_hat = result.family, result.loss_table, result.lambda_hat
    cal = result.calibration
    label = figures.RunLabel(
        model=cfg.model["name"], dataset=cfg.dataset["name"], loss=result.loss.name, bound=cal.bound,
        fwer=cal.fwer, criterion=family.criterion, alpha=cal.alpha, delta=cal.delta,
        scope=family.scope, structure=family.structure, synthetic=data.synthetic,
    )
    lambdas, pool_risk = table.lambdas, table.losses.mean(1)
    splits = validation.splits
    drawn = {
        "risk_vs_lambda": (figures.risk_vs_lambda(lambdas, model_sparsity(table, family, model), splits, pool_risk,
                                                  lam_hat, label) if splits is not None else None),
        "test_risk_hist": (figures.test_risk_histogram(splits, validation.iid, label)
                           if splits is not None and splits.n_test else None),
        "lambda_hat_hist": figures.lambda_hat_histogram(lambdas, splits, lam_hat, label) if splits is not None else None,
        "first_layer_heatmap": figures.first_layer_heatmap(model, family, lambdas, lam_hat, label),
        "risk_vs_cost": figures.risk_vs_cost(pool_risk, cost, lam_hat, label),
    }
    for stem, task_figure in figures.TASK_FIGURES.get(data.task, {}).items():
        drawn[stem] = task_figure(model, family, data.pool_inputs, data.pool_targets, lambdas,
                                  pool_risk, lam_hat, label)
    formats = list(cfg.figure_formats)
    drawn_files.update({stem: figures.save_figure(fig, fig_dir, stem, formats)[0]
                        for stem, fig in drawn.items() if fig is not None})
    return drawn_files


def model_sparsity(table: LossTable, family: Family, model: nn.Module) -> np.ndarray:
    """(G',) fraction of the whole model's parameters removed at each evaluated λ."""
    return table.sparsity * family.pool_size / sum(p.numel() for p in model.parameters())


def summarise(
    cfg: Config, config_hash: str, data: TaskData, dense: DenseModel, sweep: Sweep, validation: Validation,
    result: CertifiedPruning, cost: dict[str, Any], timing: dict[str, float], files: dict[str, str], out: Path,
    artifacts: dict[str, str],
) -> RunSummary:
    cal, v, family, table = cfg.calibration, validation.splits, result.family, result.loss_table
    lambdas, grid, risks = table.lambdas, table.grid, sweep.risks
    return RunSummary(
        config_hash=config_hash, experiment=cfg.name, model=cfg.model["name"], dataset=cfg.dataset["name"],
        synthetic_data=data.synthetic,
        loss=" & ".join(r.name for r in risks) if cfg.calibration.risks else sweep.loss.name,
        bound=result.calibration.bound, fwer=result.calibration.fwer,
        criterion=family.criterion, scope=family.scope, score_inputs=family.score_info, seed=cfg.seed,
        alpha=risks[0].alpha, delta=cal.delta, n_cal=cal.n_cal,
        n_test=cal.n_test if v is not None else 0, n_splits=cal.n_splits if v is not None else cfg.knobs.validation_reps,
        pool_size=data.pool_size,
        grid=GridInfo(int(grid.size), int(lambdas.size), float(grid[0]), float(grid[-1])),
        lambdas=[float(x) for x in lambdas],
        pool_risk=[float(x) for x in table.losses.mean(axis=1)],
        dense=dense.metrics, dense_risk=table.dense_risk,
        model_from_cache=dense.from_cache, loss_table_from_cache=sweep.from_cache,
        dense_metrics_from_cache=dense.metrics_from_cache,
        lambda_hat=LambdaHat(*_split_quantiles(v, lambdas), result.lambda_hat),
        sparsity_hat=SparsityHat(
            _split_sparsity_median(v, table.sparsity), result.sparsity,
            float(model_sparsity(table, family, dense.model)[result.lambda_index]) if result.certified else None,
        ),
        deploy=Deployment(result.certified, result.cal_risk, result.certificate["holdout_risk"]),
        **_coverage(validation),
        aux_at_deploy={k: float(x[result.lambda_index]) for k, x in table.aux.items()} if result.certified else {},
        throughput=Throughput(table.dense_seconds, table.seconds / max(1, lambdas.size), torch.get_num_threads()),
        timing=timing, files=files, output_dir=str(out), artifacts=artifacts,
        structure=family.structure, cost={**{k: v for k, v in cost.items() if k != "conventions"},
                                          **_pareto_costs(validation, cfg, result)},
    )


def _split_quantiles(v: SplitValidation | None, values: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """Median, 5% and 95% quantiles of ``values`` at λ̂ over the splits that certified."""
    if v is None:
        return None, None, None
    at = values[v.lambda_index[v.certified]]
    if not at.size:
        return None, None, None
    return float(np.median(at)), float(np.quantile(at, 0.05)), float(np.quantile(at, 0.95))


def _split_sparsity_median(v: SplitValidation | None, sparsity: np.ndarray) -> float | None:
    """Median over *all* validation splits of the certified pool sparsity, a split that certified
    nothing counting as 0 (ours: "no claim" certifies no pruning). The one definition the summary,
    wandb, the tables and the figures use (:func:`confprune.figures.sweep.split_sparsity`)."""
    if v is None:
        return None
    at = np.where(v.certified, sparsity[np.clip(v.lambda_index, 0, sparsity.size - 1)], 0.0)
    return float(np.median(at))


def _coverage(validation: Validation) -> dict[str, Any]:
    """The summary's validation fields: split coverage (one family), i.i.d. coverage (both)."""
    v, p = validation.splits, validation.pareto
    if v is None:
        assert p is not None
        return {"coverage": None, "coverage_ci": None, "iid_coverage": p["coverage"], "iid_coverage_ci": p["coverage_ci"],
                "test_risk_median": None, "violations": p["violations"], "certified_fraction": p["certified_fraction"]}
    ci = v.coverage_interval()
    return {"coverage": v.coverage, "coverage_ci": list(ci) if ci is not None else None,
            "iid_coverage": validation.iid.coverage, "iid_coverage_ci": list(validation.iid.coverage_interval()),
            "test_risk_median": float(np.nanmedian(v.test_risk)) if v.certified.any() and v.n_test else None,
            "violations": int(v.violated.sum()), "certified_fraction": float(v.certified.mean())}


def _pareto_costs(validation: Validation, cfg: Config, result: CertifiedPruning) -> dict[str, Any]:
    """Several families: the objective, each family alone on the deployment set, the best of them."""
    if validation.single is None:
        return {}
    best = min((s["cost"] for s in validation.single if s["cost"] is not None), default=None)
    return {"objective": cfg.knobs.objective, "certified_cost": result.certificate["pareto"]["certified_cost"],
            "single_family": validation.single, "best_single_family": best,
            "median_certified_cost": validation.pareto["median_cost"]}
