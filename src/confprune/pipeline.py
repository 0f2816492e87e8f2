"""The pipeline behind ``python -m confprune.run`` as named stages (plain functions, no Hydra).

    check → load data → dense model → pruning family → loss table → split validation →
    deployment certificate and export → figures → summary

Each stage is a function with typed inputs and outputs; :func:`run` reads as that list. Heavy
imports (torch, SciPy) live here and not in ``confprune.run``, so that a Hydra launcher's parent
process composes and dispatches jobs without importing them; matplotlib is imported only when a
run draws figures.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .api import CertifiedPruning, certify_from_table
from .cache import cached
from .calibrate import FixedSequenceStop, deployment_indices
from .data import TaskData, load_dataset
from .errors import ConfigError
from .integrity import content_key
from .losses import Loss, make_loss
from .pruning import PruningFamily, build_family
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
from .schema import Config, check_config
from .stats import (
    IidValidation,
    Splits,
    SplitValidation,
    draw_iid_calibration,
    draw_splits,
    iid_validation,
    make_fwer,
    validate_splits,
)
from .sweep import LossTable, cached_loss_tables, compute_loss_tables
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
class Validation:
    splits: SplitValidation  # LTT on every random split, test risk at λ̂
    iid: IidValidation  # LTT on i.i.d. draws, scored against the exact pool risk


@dataclass
class RunResult:
    """What :func:`run` returns: the summary it wrote and the figures it drew (stem → PNG path)."""

    summary: RunSummary
    figures: dict[str, str] = field(default_factory=dict)


class StageTimer:
    """``with timer("sweep"): ...`` records ``sweep_s`` seconds in ``timer.seconds``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[f"{stage}_s"] = time.perf_counter() - t


# --------------------------------------------------------------------------------------------
# The run


def run(cfg: Config, output_dir: str | Path, config_hash: str = "") -> RunResult:
    """Run every stage for one configuration; writes every artifact into ``output_dir``."""
    t_start = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = np.asarray(check(cfg))
    seed_everything(cfg)
    timer = StageTimer()
    with timer("data"):
        data = load_data(cfg)
    dense = dense_model(cfg, data)
    family = pruning_family(cfg, dense, data)
    loss = make_loss(**cfg.loss)
    draws = calibration_draws(cfg, data.pool_size)
    with timer("sweep"):
        table, table_cached = loss_table(cfg, dense, family, data, loss, grid, draws)
    table.save(out / "losses.npz")
    with timer("validation"):
        validation = split_validation(cfg, table, draws)
    write_splits(out / "splits.csv", split_columns(table, validation.splits))
    result = deployment_certificate(cfg, dense, family, table, loss, data, draws)
    with timer("cost"):
        cost = cost_profile(cfg, dense, family, table, result, data)
    result.certificate["cost"] = {k: cost[k] for k in ("dense", "deploy", "machine", "conventions")}
    files = {"losses": str(out / "losses.npz"), "splits": str(out / "splits.csv")}
    if cfg.export:
        files.update(result.save(out))
    figures: dict[str, str] = {}
    if cfg.figures:
        with timer("figures"):
            figures = draw_figures(dense.model, family, table, validation.splits, result, data, loss, cost,
                                   out / "figures")
    timing = {"data_s": timer.seconds["data_s"], "train_s": dense.train_seconds, **timer.seconds}
    timing["total_s"] = time.perf_counter() - t_start
    files = {**files, **{f"figure_{k}": v for k, v in figures.items()}}
    written = [*files.values(), *(str(Path(p).with_suffix(".pdf")) for p in figures.values())]
    summary = summarise(cfg, config_hash, data, dense, family, loss, table, table_cached, validation, result,
                        cost, timing, files, out, artifact_checksums(out, written))
    write_summary(summary, out)
    return RunResult(summary, figures)


# --------------------------------------------------------------------------------------------
# Stages


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


def dense_model(cfg: Config, data: TaskData) -> DenseModel:
    """Train the dense model or load it from the cache; its metrics on the pool (cached too)."""
    trained = train_or_load(cfg.model, cfg.dataset, cfg.trainer, cfg.seed, data, cfg.paths.cache_dir,
                            progress=cfg.sweep.progress)
    model = trained.model.to(cfg.sweep.device)
    checksum = trained.meta["checksum"]
    metrics, metrics_cached = cached_dense_metrics(
        model, checksum, data, cfg.paths.cache_dir, cfg.sweep.device, cfg.trainer.eval_batch_size
    )
    log.info("dense model on the pool: %s (model %s, metrics %s)", metrics,
             "cached" if trained.from_cache else "trained", "cached" if metrics_cached else "computed")
    return DenseModel(model, trained.key, checksum, trained.path, trained.from_cache, trained.train_seconds,
                      trained.trajectory, metrics, metrics_cached)


def pruning_family(cfg: Config, dense: DenseModel, data: TaskData) -> PruningFamily:
    """Score and rank the pruning pool once. Data-informed criteria draw their batch from the
    training set (never the pool), on the sweep's device."""

    def train_inputs() -> torch.Tensor:
        return data.train_inputs.to(cfg.sweep.device)

    return build_family(dense.model, **cfg.pruning, trajectory=dense.trajectory, train_inputs=train_inputs,
                        example_inputs=torch.zeros_like(data.pool_inputs[:2]).to(cfg.sweep.device))


def calibration_draws(cfg: Config, n_pool: int) -> CalibrationDraws:
    cal = cfg.calibration
    return CalibrationDraws(
        splits=draw_splits(n_pool, cal.n_cal, cal.n_test, cal.n_splits, cal.split_seed),
        iid=draw_iid_calibration(n_pool, cal.n_cal, cal.n_splits, cal.split_seed),
        deploy=deployment_indices(n_pool, cal.n_cal, cal.split_seed),
        draw={"source": "seeded", "pool_size": n_pool, "n_cal": cal.n_cal, "seed": cal.split_seed},
    )


def loss_table(
    cfg: Config, dense: DenseModel, family: PruningFamily, data: TaskData, loss: Loss, grid: np.ndarray,
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

    def payload(one: Loss) -> dict[str, Any]:
        return {
            "model_checksum": dense.checksum,
            "pool": data.pool_fingerprint(),
            "loss": {"name": one.name, **one.params},
            "pruning": dict(cfg.pruning),
            "grid": [float(x) for x in grid],
            "device": torch.device(cfg.sweep.device).type,
        }

    return cached_loss_tables(cfg.paths.cache_dir, [payload(one) for one in losses],
                              lambda wanted: sweep([losses[i] for i in wanted]))


def companion_losses(loss: Loss, task: str) -> list[Loss]:
    """The task's other registered losses, with their default options (computed in the same pass)."""
    from .losses import LOSSES

    return [spec.make() for name, spec in LOSSES.items()
            if spec.task == task and not (name == loss.name and spec.make().params == loss.params)]


def split_validation(cfg: Config, table: LossTable, draws: CalibrationDraws) -> Validation:
    """LTT on every random split (test risk at λ̂) and on i.i.d. draws (exact pool risk)."""
    cal = cfg.calibration
    procedure, n_grid = make_fwer(**cfg.fwer), table.grid.size
    splits = validate_splits(table.losses, draws.splits, alpha=cal.alpha, delta=cal.delta, bound=cfg.bound.name,
                             fwer=procedure, keep_pvalues=True, n_grid=n_grid)
    iid = iid_validation(table.losses, n_cal=cal.n_cal, n_reps=cal.n_splits, alpha=cal.alpha, delta=cal.delta,
                         bound=cfg.bound.name, fwer=procedure, n_grid=n_grid, draws=draws.iid)
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


def deployment_certificate(
    cfg: Config, dense: DenseModel, family: PruningFamily, table: LossTable, loss: Loss, data: TaskData,
    draws: CalibrationDraws,
) -> CertifiedPruning:
    """LTT on the deployment calibration set: the certified λ̂, pruned model and certificate."""
    cal = cfg.calibration
    holdout = np.setdiff1d(np.arange(data.pool_size), draws.deploy)
    result = certify_from_table(
        dense.model, family, table, loss, alpha=cal.alpha, delta=cal.delta, bound=cfg.bound.name,
        fwer=make_fwer(**cfg.fwer), calibration_indices=draws.deploy, calibration_draw=draws.draw,
        data_info={
            "dataset": dict(cfg.dataset),
            "description": data.description,
            "synthetic": data.synthetic,
            "calibration_fingerprint": data.pool_fingerprint(draws.deploy),
        },
        model_info={"name": cfg.model["name"], "config": dict(cfg.model), "cache_key": dense.key,
                    "checkpoint": str(dense.path), "seed": cfg.seed},
        extra={"holdout_size": int(holdout.size)},
    )
    result.certificate["holdout_risk"] = (
        float(table.losses[result.lambda_index, holdout].mean()) if result.certified and holdout.size else None
    )
    return result


def cost_profile(
    cfg: Config, dense: DenseModel, family: PruningFamily, table: LossTable, result: CertifiedPruning, data: TaskData,
) -> dict[str, Any]:
    """What the pruned models cost: parameters and MACs at every evaluated λ (the curve),
    parameters, MACs and export bytes of the dense and the certified model, and measured CPU
    latency of the dense model, the certified one and a few grid points (cfg.cost). Curves and
    latencies are cached per model and family (latencies also per machine and threads)."""
    from . import cost as costs

    example = torch.zeros_like(data.pool_inputs[:1])
    fam = dict(family.config)

    def json_cached(kind: str, payload: dict[str, Any], compute: Any) -> Any:
        key = content_key({"kind": kind, **payload})
        return cached(Path(cfg.paths.cache_dir) / "costs" / f"{key}.json", lambda p: json.loads(p.read_text())["value"],
                      compute, lambda v, tmp: Path(tmp).write_text(json.dumps({"key": key, "value": v})), kind)[0]

    base = {"model_checksum": dense.checksum, "family": fam, "input": list(example.shape[1:])}
    lambdas = [float(x) for x in table.lambdas]
    curve = json_cached("cost_curve", {**base, "lambdas": lambdas},
                        lambda: costs.cost_curve(dense.model, family, lambdas, example))
    dense_cost = costs.model_cost(dense.model, family, None, example)
    deploy = costs.model_cost(dense.model, family, result.lambda_hat, example) if result.certified else None
    machine = costs.machine()
    latency: list[dict[str, Any]] = []
    if cfg.cost.latency:
        batches = sorted({*cfg.cost.latency_batches, cfg.sweep.batch_size})
        n = len(lambdas)
        picks = [round(i * (n - 1) / (cfg.cost.latency_points + 1)) for i in range(1, cfg.cost.latency_points + 1)]
        points: list[float | None] = [None, *([result.lambda_hat] if result.certified else []),
                                      *(lambdas[i] for i in sorted(set(picks)))]
        for lam in dict.fromkeys(points):  # the dense model, λ̂, grid points; each once
            measured = json_cached("latency", {**base, "lambda": lam, "batches": batches, "machine": machine},
                                   lambda lam=lam: costs.latency_at(dense.model, family, lam, example, batches))
            latency.append({"lambda": lam, **measured})
        dense_cost["latency"] = latency[0]
        if deploy is not None:
            deploy["latency"] = latency[1]
    return {"dense": dense_cost, "deploy": deploy, "curve": curve, "latency": latency, "machine": machine,
            "conventions": costs.COST_CONVENTIONS}


def draw_figures(
    model: nn.Module, family: PruningFamily, table: LossTable, validation: SplitValidation,
    result: CertifiedPruning, data: TaskData, loss: Loss, cost: dict[str, Any], fig_dir: Path,
) -> dict[str, str]:
    """The run's figures (PNG + PDF); returns stem → PNG path."""
    from . import figures  # matplotlib: only when drawing

    lambdas, pool_risk = table.lambdas, table.losses.mean(1)
    made = [
        *figures.risk_vs_lambda(lambdas, model_sparsity(table, family, model), validation, result, pool_risk,
                                loss.name, fig_dir),
        *(figures.test_risk_histogram(validation, fig_dir) if validation.n_test else []),
        *figures.lambda_hat_histogram(lambdas, validation, fig_dir),
        *figures.first_layer_heatmap(model, family, result.lambda_hat, fig_dir),
        *figures.risk_vs_cost(pool_risk, cost, result.lambda_hat, validation.alpha, loss.name, family, fig_dir),
    ]
    for task_figure in figures.TASK_FIGURES.get(data.task, ()):
        made += task_figure(model, family, data.pool_inputs, data.pool_targets, lambdas, pool_risk,
                            result.lambda_hat, fig_dir)
    return {Path(p).stem: p for p in made if p.endswith(".png")}


def model_sparsity(table: LossTable, family: PruningFamily, model: nn.Module) -> np.ndarray:
    """(G',) fraction of the whole model's parameters removed at each evaluated λ."""
    return table.sparsity * family.pool_size / sum(p.numel() for p in model.parameters())


def summarise(
    cfg: Config, config_hash: str, data: TaskData, dense: DenseModel, family: PruningFamily, loss: Loss,
    table: LossTable, table_cached: bool, validation: Validation, result: CertifiedPruning,
    cost: dict[str, Any], timing: dict[str, float], files: dict[str, str], out: Path, artifacts: dict[str, str],
) -> RunSummary:
    cal, v = cfg.calibration, validation.splits
    lambdas, grid = table.lambdas, table.grid
    at = v.lambda_index[v.certified]  # λ̂ index of every split that certified

    def quantile(values: np.ndarray, q: float) -> float | None:
        return (float(np.median(values)) if q == 0.5 else float(np.quantile(values, q))) if at.size else None

    ci = v.coverage_interval()
    return RunSummary(
        config_hash=config_hash, experiment=cfg.name, model=cfg.model["name"], dataset=cfg.dataset["name"],
        synthetic_data=data.synthetic, loss=loss.name, bound=cfg.bound.name, fwer=cfg.fwer["name"],
        criterion=family.criterion, scope=family.scope, score_inputs=family.score_info, seed=cfg.seed,
        alpha=cal.alpha, delta=cal.delta, n_cal=cal.n_cal, n_test=cal.n_test, n_splits=cal.n_splits,
        pool_size=data.pool_size,
        grid=GridInfo(int(grid.size), int(lambdas.size), float(grid[0]), float(grid[-1])),
        lambdas=[float(x) for x in lambdas],
        pool_risk=[float(x) for x in table.losses.mean(axis=1)],
        dense=dense.metrics, dense_risk=float(table.losses[0].mean()),
        model_from_cache=dense.from_cache, loss_table_from_cache=table_cached,
        dense_metrics_from_cache=dense.metrics_from_cache,
        lambda_hat=LambdaHat(quantile(lambdas[at], 0.5), quantile(lambdas[at], 0.05), quantile(lambdas[at], 0.95),
                             result.lambda_hat),
        sparsity_hat=SparsityHat(
            quantile(table.sparsity[at], 0.5), result.sparsity,
            float(model_sparsity(table, family, dense.model)[result.lambda_index]) if result.certified else None,
        ),
        deploy=Deployment(result.certified, result.cal_risk, result.certificate["holdout_risk"]),
        coverage=v.coverage, coverage_ci=list(ci) if ci is not None else None,
        iid_coverage=validation.iid.coverage, iid_coverage_ci=list(validation.iid.coverage_interval()),
        test_risk_median=float(np.nanmedian(v.test_risk)) if v.certified.any() and v.n_test else None,
        violations=int(v.violated.sum()), certified_fraction=float(v.certified.mean()),
        aux_at_deploy={k: float(x[result.lambda_index]) for k, x in table.aux.items()} if result.certified else {},
        throughput=Throughput(table.dense_seconds, table.seconds / max(1, lambdas.size), torch.get_num_threads()),
        timing=timing, files=files, output_dir=str(out), artifacts=artifacts,
        structure=family.structure, cost={k: v for k, v in cost.items() if k != "conventions"},
    )
