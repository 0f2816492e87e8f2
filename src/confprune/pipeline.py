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
from collections.abc import Callable, Iterator
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
from .forward import LAYOUT_VERSION, tune_allocator
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
from .stats.risks import RiskSpec, iid_validate_risks, validate_risks
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


def run(cfg: Config, output_dir: str | Path, config_hash: str = "",
        on_train_step: Callable[[int, dict[str, float]], None] | None = None) -> RunResult:
    """Run every stage for one configuration; writes every artifact into ``output_dir``.
    ``on_train_step(step, metrics)`` sees every optimizer step when the model is trained (a
    tracker's training curves); nothing when it comes from the cache."""
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
    dense = dense_model(cfg, data, on_train_step)
    if cfg.knobs is not None:  # several pruning families at once: Pareto testing
        return run_multiknob(cfg, out, config_hash, grid, data, dense, timer, t_start)
    family = pruning_family(cfg, dense, data)
    risks = risk_specs(cfg)
    loss = make_loss(**cfg.loss) if risks is None else make_loss(risks[0].table)
    draws = calibration_draws(cfg, data.pool_size)
    with timer("sweep"):
        table, table_cached = loss_table(cfg, dense, family, data, loss, grid, draws)
        tables = {loss.name: table, **{r.table: loss_table(cfg, dense, family, data, make_loss(r.table), grid, draws)[0]
                                      for r in risks or [] if r.table != loss.name}}
    table.save(out / "losses.npz", timing=False)  # byte-reproducible: timings are in summary.json
    with timer("validation"):
        validation = split_validation(cfg, table, draws, risks, tables, data)
    write_splits(out / "splits.csv", split_columns(table, validation.splits))
    result = deployment_certificate(cfg, dense, family, table, loss, data, draws, risks, tables)
    with timer("cost"):
        cost = cost_profile(cfg, dense, family, table, result, data)
    result.certificate["cost"] = {k: cost[k] for k in ("dense", "deploy", "machine", "conventions")}
    files = {"losses": str(out / "losses.npz"), "splits": str(out / "splits.csv")}
    if cfg.export:
        files.update(result.save(out))
    figures: dict[str, str] = {}
    if cfg.figures:
        with timer("figures"):
            figures = draw_figures(cfg, dense.model, family, table, validation, result, data, loss, cost,
                                   out / "figures")
    timing = {"data_s": timer.seconds["data_s"], "train_s": dense.train_seconds, **timer.seconds}
    timing["total_s"] = time.perf_counter() - t_start
    files = {**files, **{f"figure_{k}": v for k, v in figures.items()}}
    written = [*files.values(), *(str(Path(p).with_suffix(".pdf")) for p in figures.values())]
    summary = summarise(cfg, config_hash, data, dense, family, loss, table, table_cached, validation, result,
                        cost, timing, files, out, artifact_checksums(out, written), risks)
    write_summary(summary, out)
    return RunResult(summary, figures)


def run_multiknob(cfg: Config, out: Path, config_hash: str, grid: np.ndarray, data: TaskData, dense: DenseModel,
                  timer: StageTimer, t_start: float) -> RunResult:
    """Pareto testing over the declared knobs (cfg.knobs × the λ grid): knob tables on the pool,
    the certified configuration on the deployment calibration set, the exact i.i.d. check of the
    whole procedure, and each knob certified alone (fixed sequence) for comparison."""
    from . import multiknob as mk
    from .stats.risks import calibrate_risks

    risks = risk_specs(cfg) or [RiskSpec(make_loss(**cfg.loss).name, cfg.calibration.alpha, cfg.bound.name)]
    knobs = [mk.Knob(**fam) for fam in cfg.knobs.families]
    draws = calibration_draws(cfg, data.pool_size)
    with timer("sweep"):
        kt = mk.knob_tables(dense.model, (data.pool_inputs, data.pool_targets), knobs=knobs, risks=risks,
                            lambdas=grid, objective=cfg.knobs.objective, seed=cfg.seed,
                            batch_size=cfg.sweep.batch_size, progress=cfg.sweep.progress)
    result = mk.pareto_from_tables(dense.model, kt, risks, draws.deploy, delta=cfg.calibration.delta,
                                   objective=cfg.knobs.objective, opt_fraction=cfg.knobs.opt_fraction,
                                   seed=cfg.calibration.split_seed)
    with timer("validation"):
        check_ = mk.iid_validate_pareto(kt, n_cal=cfg.calibration.n_cal, reps=cfg.knobs.validation_reps,
                                        delta=cfg.calibration.delta, opt_fraction=cfg.knobs.opt_fraction,
                                        seed=cfg.calibration.split_seed)
    single = []  # each knob alone, all risks, fixed sequence on the same calibration set
    g = grid.size
    for k, knob in enumerate(knobs):
        tables = {f"risk{i}": kt.losses[i, k * g:(k + 1) * g] for i in range(len(risks))}
        specs = [RiskSpec(f"risk{i}", a, b) for i, (a, b) in enumerate(zip(kt.alphas, kt.bounds, strict=True))]
        cal, _ = calibrate_risks(tables, specs, draws.deploy, delta=cfg.calibration.delta)
        lam = float(grid[cal.lambda_index]) if cal.certified else None
        single.append({"knob": knob.label, "lambda": lam,
                       "cost": float(kt.costs[k * g + cal.lambda_index]) if cal.certified else None})
    files = mk.save_pareto(result, out)
    record = json.loads(Path(files["record"]).read_text())
    best_single = min((s["cost"] for s in single if s["cost"] is not None), default=None)
    record.update(single_knob=single, best_single_knob_cost=best_single, iid_check=check_)
    from .record import write_json

    write_json(record, files["record"])
    figures: dict[str, str] = {}
    if cfg.figures:
        with timer("figures"):
            made = mk.front_figure(result, kt, out / "figures")
            figures = {Path(p).stem: p for p in made if p.endswith(".png")}
    conf = result.configuration
    k = knobs.index(mk.Knob(**{f: conf[f] for f in ("criterion", "structure", "scope", "quantize")})) if conf else None
    sparsity = kt.families[k].sparsity(conf["lambda"]) if conf else None
    timing = {"data_s": timer.seconds["data_s"], "train_s": dense.train_seconds, **timer.seconds,
              "total_s": time.perf_counter() - t_start}
    all_files = {**files, **{f"figure_{n}": p for n, p in figures.items()}}
    written = [*all_files.values(), *(str(Path(p).with_suffix(".pdf")) for p in figures.values())]
    summary = RunSummary(
        config_hash=config_hash, experiment=cfg.name, model=cfg.model["name"], dataset=cfg.dataset["name"],
        synthetic_data=data.synthetic, loss=" & ".join(r.name for r in risks), bound="+".join(kt.bounds),
        fwer="pareto_testing", criterion=conf["label"] if conf else "none", scope=conf["scope"] if conf else "-",
        score_inputs=None, seed=cfg.seed, alpha=risks[0].alpha, delta=cfg.calibration.delta, n_cal=cfg.calibration.n_cal,
        n_test=0, n_splits=check_["reps"], pool_size=data.pool_size,
        grid=GridInfo(int(grid.size), int(grid.size), float(grid[0]), float(grid[-1])),
        lambdas=[float(x) for x in grid], pool_risk=[], dense=dense.metrics, dense_risk=float(kt.losses[0, 0].mean()),
        model_from_cache=dense.from_cache, loss_table_from_cache=False, dense_metrics_from_cache=dense.metrics_from_cache,
        lambda_hat=LambdaHat(None, None, None, conf["lambda"] if conf else None),
        sparsity_hat=SparsityHat(None, sparsity, sparsity),
        deploy=Deployment(result.certified, None, None), coverage=None, coverage_ci=None,
        iid_coverage=check_["coverage"], iid_coverage_ci=check_["coverage_ci"], test_risk_median=None, violations=0,
        certified_fraction=check_["certified_fraction"], aux_at_deploy={},
        throughput=Throughput(0.0, 0.0, torch.get_num_threads()), timing=timing, files=all_files, output_dir=str(out),
        artifacts=artifact_checksums(out, written), structure="multi-knob",
        cost={"objective": cfg.knobs.objective, "deploy": {cfg.knobs.objective: conf["cost"]} if conf else None,
              "best_single_knob": best_single},
    )
    write_summary(summary, out)
    return RunResult(summary, figures)


# --------------------------------------------------------------------------------------------
# Stages


def risk_specs(cfg: Config) -> list[RiskSpec] | None:
    """``calibration.risks`` as risk specs (None: the single risk of ``loss`` at ``calibration.alpha``)."""
    return [RiskSpec(**r) for r in cfg.calibration.risks] if cfg.calibration.risks else None


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


def split_validation(cfg: Config, table: LossTable, draws: CalibrationDraws, risks: list[RiskSpec] | None = None,
                     tables: dict[str, LossTable] | None = None, data: TaskData | None = None) -> Validation:
    """LTT on every random split (test risk at λ̂) and on i.i.d. draws (exact pool risk); with
    several risks, a split passes only if every risk does."""
    cal = cfg.calibration
    procedure, n_grid = make_fwer(**cfg.fwer), table.grid.size
    if risks:
        arrays = {k: t.losses for k, t in (tables or {}).items()}
        dense = {k: t.dense_losses for k, t in (tables or {}).items() if t.dense_losses is not None}
        labels = _labels(data)
        splits = validate_risks(arrays, risks, draws.splits, delta=cal.delta, fwer=procedure, n_grid=n_grid,
                                labels=labels, keep_pvalues=True, dense=dense)
        iid = iid_validate_risks(arrays, risks, draws.iid, delta=cal.delta, fwer=procedure, n_grid=n_grid,
                                 labels=labels, dense=dense)
        return Validation(splits, iid)
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


def _labels(data: TaskData | None) -> np.ndarray | None:
    """Pool labels for per-class risks (classification pools only)."""
    if data is None or data.task != "classification":
        return None
    return data.pool_targets.cpu().numpy()


def deployment_certificate(
    cfg: Config, dense: DenseModel, family: PruningFamily, table: LossTable, loss: Loss, data: TaskData,
    draws: CalibrationDraws, risks: list[RiskSpec] | None = None, tables: dict[str, LossTable] | None = None,
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
        risks=risks, tables=tables, labels=_labels(data),
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
            measured = json_cached("latency", {**base, "lambda": lam, "batches": batches, "machine": machine,
                                               "threads": 1, "method": "one intra-op thread, channels_last",
                                               "layout": LAYOUT_VERSION},
                                   lambda lam=lam: costs.latency_at(dense.model, family, lam, example, batches))
            latency.append({"lambda": lam, **measured})
        dense_cost["latency"] = latency[0]
        if deploy is not None:
            deploy["latency"] = latency[1]
    return {"dense": dense_cost, "deploy": deploy, "curve": curve, "latency": latency, "machine": machine,
            "conventions": costs.COST_CONVENTIONS}


def draw_figures(
    cfg: Config, model: nn.Module, family: PruningFamily, table: LossTable, validation: Validation,
    result: CertifiedPruning, data: TaskData, loss: Loss, cost: dict[str, Any], fig_dir: Path,
) -> dict[str, str]:
    """The run's figures (PNG + PDF), each titled with the model, the data (and whether it is
    synthetic), the pruning family, loss, bound, FWER, α and δ; returns stem → PNG path."""
    from . import figures  # matplotlib: only when drawing

    splits, lam_hat = validation.splits, result.lambda_hat
    label = figures.RunLabel(
        model=cfg.model["name"], dataset=cfg.dataset["name"], loss=loss.name, bound=cfg.bound.name,
        fwer=cfg.fwer["name"], criterion=family.criterion, alpha=splits.alpha, delta=splits.delta,
        scope=family.scope, structure=family.structure, synthetic=data.synthetic,
    )
    lambdas, pool_risk = table.lambdas, table.losses.mean(1)
    sparsity = model_sparsity(table, family, model)
    drawn = {
        "risk_vs_lambda": figures.risk_vs_lambda(lambdas, sparsity, splits, pool_risk, lam_hat, label),
        "test_risk_hist": (figures.test_risk_histogram(splits, validation.iid, label)
                           if splits.n_test else None),
        "lambda_hat_hist": figures.lambda_hat_histogram(lambdas, splits, lam_hat, label),
        "first_layer_heatmap": figures.first_layer_heatmap(model, family, lambdas, lam_hat, label),
        "risk_vs_cost": figures.risk_vs_cost(pool_risk, cost, lam_hat, label),
    }
    for stem, task_figure in figures.TASK_FIGURES.get(data.task, {}).items():
        drawn[stem] = task_figure(model, family, data.pool_inputs, data.pool_targets, lambdas,
                                  pool_risk, lam_hat, label)
    return {stem: figures.save_figure(fig, fig_dir, stem)[0]
            for stem, fig in drawn.items() if fig is not None}


def model_sparsity(table: LossTable, family: PruningFamily, model: nn.Module) -> np.ndarray:
    """(G',) fraction of the whole model's parameters removed at each evaluated λ."""
    return table.sparsity * family.pool_size / sum(p.numel() for p in model.parameters())


def summarise(
    cfg: Config, config_hash: str, data: TaskData, dense: DenseModel, family: PruningFamily, loss: Loss,
    table: LossTable, table_cached: bool, validation: Validation, result: CertifiedPruning,
    cost: dict[str, Any], timing: dict[str, float], files: dict[str, str], out: Path, artifacts: dict[str, str],
    risks: list[RiskSpec] | None = None,
) -> RunSummary:
    cal, v = cfg.calibration, validation.splits
    lambdas, grid = table.lambdas, table.grid
    at = v.lambda_index[v.certified]  # λ̂ index of every split that certified

    def quantile(values: np.ndarray, q: float) -> float | None:
        return (float(np.median(values)) if q == 0.5 else float(np.quantile(values, q))) if at.size else None

    ci = v.coverage_interval()
    return RunSummary(
        config_hash=config_hash, experiment=cfg.name, model=cfg.model["name"], dataset=cfg.dataset["name"],
        synthetic_data=data.synthetic, loss=" & ".join(r.name for r in risks) if risks else loss.name,
        bound=result.calibration.bound, fwer=cfg.fwer["name"],
        criterion=family.criterion, scope=family.scope, score_inputs=family.score_info, seed=cfg.seed,
        alpha=risks[0].alpha if risks else cal.alpha, delta=cal.delta, n_cal=cal.n_cal, n_test=cal.n_test, n_splits=cal.n_splits,
        pool_size=data.pool_size,
        grid=GridInfo(int(grid.size), int(lambdas.size), float(grid[0]), float(grid[-1])),
        lambdas=[float(x) for x in lambdas],
        pool_risk=[float(x) for x in table.losses.mean(axis=1)],
        dense=dense.metrics, dense_risk=table.dense_risk,
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
