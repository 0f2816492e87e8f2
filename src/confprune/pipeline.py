"""The pipeline behind ``python -m confprune.run`` as plain functions (no Hydra here).

Stages: validate config → load data → train or load the dense model → score and rank the pruning
pool → sweep λ into the loss table (once) → LTT over random splits (coverage) → deployment
calibration → export the certified model and certificate → figures → summary.json.

Heavy imports (torch, SciPy) live here and not in ``confprune.run``, so that a Hydra launcher's
parent process composes and dispatches jobs without importing them; matplotlib is imported only
when a run draws figures.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .api import certify_from_table
from .calibrate import FixedSequenceStop, deployment_indices
from .data import DATASETS, load_dataset
from .export import write_json
from .losses import make_loss
from .pruning import NEEDS_SCORE_INPUTS, build_family, score_batch, sipp_batch_size
from .schema import Config, ConfigError, validate
from .stats import draw_splits, iid_validation, validate_splits
from .sweep import LossTable, cached_loss_table, compute_loss_table
from .train import cached_dense_metrics, train_or_load

log = logging.getLogger("confprune")


def check(cfg: Config) -> list[float]:
    """All start-up checks (no data loaded, nothing trained); returns the λ grid."""
    pool = DATASETS[cfg.dataset["name"]].pool_size(cfg.dataset) if cfg.dataset.get("name") in DATASETS else None
    grid = validate(cfg, pool_size=pool)
    if cfg.sweep.early_stop and cfg.fwer.name != "fixed_sequence":
        raise ConfigError(
            "sweep.early_stop", True, f"false with fwer={cfg.fwer.name!r} (early stopping is exact only for fixed_sequence)"
        )
    return grid


def run(cfg: Config, output_dir: str | Path, config_hash: str = "") -> dict[str, Any]:
    """Run the whole pipeline for one configuration; writes every artifact into ``output_dir``."""
    t_start = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = np.asarray(check(cfg))
    if cfg.sweep.num_threads:
        torch.set_num_threads(cfg.sweep.num_threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    timing: dict[str, float] = {}

    t = time.perf_counter()
    data = load_dataset(cfg.dataset)
    timing["data_s"] = time.perf_counter() - t
    if cfg.calibration.n_cal + cfg.calibration.n_test > data.pool_size:  # defensive: datasets with lazy sizes
        raise ConfigError("calibration.n_cal + calibration.n_test", cfg.calibration.n_cal + cfg.calibration.n_test, f"≤ pool size {data.pool_size}")

    trained = train_or_load(
        cfg.model, cfg.dataset, cfg.trainer, cfg.seed, data, cfg.paths.cache_dir, progress=cfg.sweep.progress
    )
    model = trained.model.to(cfg.sweep.device)
    timing["train_s"] = trained.train_seconds
    dense, dense_cached = cached_dense_metrics(
        model, trained.key, data, cfg.paths.cache_dir, cfg.sweep.device, cfg.trainer.eval_batch_size
    )
    log.info("dense model on the pool: %s (model %s, metrics %s)", dense,
             "cached" if trained.from_cache else "trained", "cached" if dense_cached else "computed")

    score_inputs, score_info = None, None
    if cfg.pruning.criterion in NEEDS_SCORE_INPUTS:  # from the training set, never the pool
        size = int(cfg.pruning.options.get("batch_size") or sipp_batch_size(model))
        score_inputs, idx = score_batch(data.train_inputs, size, cfg.pruning.seed)
        score_inputs = score_inputs.to(cfg.sweep.device)
        score_info = {"source": "training set", "size": int(idx.numel()), "seed": cfg.pruning.seed}
    family = build_family(
        model,
        criterion=cfg.pruning.criterion,
        scope=cfg.pruning.scope,
        include_bias=cfg.pruning.include_bias,
        include_norm=cfg.pruning.include_norm,
        seed=cfg.pruning.seed,
        options=cfg.pruning.options,
        trajectory=trained.trajectory,
        score_inputs=score_inputs,
    )
    loss = make_loss(cfg.loss.name, cfg.loss.tau)
    cal_cfg = cfg.calibration
    splits = draw_splits(data.pool_size, cal_cfg.n_cal, cal_cfg.n_test, cal_cfg.n_splits, cal_cfg.split_seed)
    deploy = deployment_indices(data.pool_size, cal_cfg.n_cal, cal_cfg.split_seed)
    stop = (
        FixedSequenceStop(splits, deploy, alpha=cal_cfg.alpha, delta=cal_cfg.delta, bound=cfg.bound.name)
        if cfg.sweep.early_stop
        else None
    )

    def sweep() -> LossTable:
        return compute_loss_table(
            model, family, grid, (data.pool_inputs, data.pool_targets), loss,
            batch_size=cfg.sweep.batch_size, stop=stop, progress=cfg.sweep.progress,
        )

    t = time.perf_counter()
    if stop is None:  # complete tables are shared by every job with the same model, pool and loss
        payload = {
            "model_key": trained.key,
            "pool": data.pool_fingerprint(),
            "loss": {"name": loss.name, "tau": cfg.loss.tau},
            "pruning": asdict(cfg.pruning),
            "grid": [float(x) for x in grid],
            "device": torch.device(cfg.sweep.device).type,
        }
        table, table_cached = cached_loss_table(cfg.paths.cache_dir, payload, sweep)
    else:
        table, table_cached = sweep(), False
    timing["sweep_s"] = time.perf_counter() - t
    table.save(out / "losses.npz")

    t = time.perf_counter()
    validation = validate_splits(
        table.losses, splits, alpha=cal_cfg.alpha, delta=cal_cfg.delta, bound=cfg.bound.name,
        fwer=_fwer(cfg), keep_pvalues=True,
    )
    iid = iid_validation(
        table.losses, n_cal=cal_cfg.n_cal, n_reps=cal_cfg.n_splits, alpha=cal_cfg.alpha, delta=cal_cfg.delta,
        bound=cfg.bound.name, fwer=_fwer(cfg), seed=cal_cfg.split_seed,
    )
    timing["validation_s"] = time.perf_counter() - t
    lambdas = table.lambdas
    write_splits_csv(
        out / "splits.csv",
        {
            "split": np.arange(validation.n_splits),
            "lambda_hat": np.where(validation.certified, lambdas[np.maximum(validation.lambda_index, 0)], np.nan),
            "sparsity_hat": np.where(validation.certified, table.sparsity[np.maximum(validation.lambda_index, 0)], np.nan),
            "cal_risk": validation.cal_risk,
            "test_risk": validation.test_risk,
            "violated": validation.violated,
            "certified": validation.certified,
        },
    )

    holdout = np.setdiff1d(np.arange(data.pool_size), deploy)
    result = certify_from_table(
        model, family, table, loss, alpha=cal_cfg.alpha, delta=cal_cfg.delta, bound=cfg.bound.name,
        fwer=cfg.fwer.name, n_starts=cfg.fwer.n_starts, calibration_indices=deploy,
        data_info={
            "dataset": dict(cfg.dataset),
            "description": data.description,
            "synthetic": data.synthetic,
            "calibration_fingerprint": data.pool_fingerprint(deploy),
        },
        model_info={"name": cfg.model["name"], "config": dict(cfg.model), "cache_key": trained.key,
                    "checkpoint": str(trained.path), "seed": cfg.seed},
        extra={"holdout_size": int(holdout.size)},
    )
    cert = result.certification
    deploy_test_risk = (
        float(table.losses[cert.lambda_index, holdout].mean()) if cert.certified and holdout.size else None
    )
    result.certificate["holdout_risk"] = deploy_test_risk
    total_params = sum(p.numel() for p in model.parameters())
    model_sparsity = table.sparsity * family.pool_size / total_params
    files: dict[str, Any] = {"losses": str(out / "losses.npz"), "splits": str(out / "splits.csv")}
    if cfg.export:
        files.update(result.save(out))

    fig_paths: dict[str, str] = {}
    if cfg.figures:
        from . import figures  # matplotlib: only when drawing

        t = time.perf_counter()
        fig_dir = out / "figures"
        made = [
            *figures.risk_vs_lambda(lambdas, model_sparsity, validation, cert, table.losses.mean(1), loss.name, fig_dir),
            *figures.test_risk_histogram(validation, fig_dir),
            *figures.lambda_hat_histogram(lambdas, validation, fig_dir),
            *figures.first_layer_heatmap(model, family, cert.lambda_hat, fig_dir),
        ]
        for task_figure in figures.TASK_FIGURES.get(data.task, ()):
            made += task_figure(model, family, data.pool_inputs, data.pool_targets, lambdas,
                                table.losses.mean(1), cert.lambda_hat, fig_dir)
        fig_paths = {Path(p).stem: p for p in made if p.endswith(".png")}
        timing["figures_s"] = time.perf_counter() - t

    lo, hi = validation.coverage_interval()
    certified_idx = validation.lambda_index[validation.certified]
    timing["total_s"] = time.perf_counter() - t_start
    summary = {
        "config_hash": config_hash,
        "experiment": cfg.name,
        "model": cfg.model["name"],
        "dataset": cfg.dataset["name"],
        "synthetic_data": data.synthetic,
        "loss": loss.name,
        "bound": cfg.bound.name,
        "fwer": cfg.fwer.name,
        "criterion": family.criterion,
        "scope": family.scope,
        "score_inputs": score_info,
        "seed": cfg.seed,
        "alpha": cal_cfg.alpha,
        "delta": cal_cfg.delta,
        "n_cal": cal_cfg.n_cal,
        "n_test": cal_cfg.n_test,
        "n_splits": cal_cfg.n_splits,
        "pool_size": data.pool_size,
        "grid": {"size": int(grid.size), "evaluated": int(lambdas.size), "min": float(grid[0]), "max": float(grid[-1])},
        "lambdas": [float(x) for x in lambdas],
        "pool_risk": [float(x) for x in table.losses.mean(axis=1)],
        "dense": dense,
        "dense_risk": float(table.losses[0].mean()),
        "model_from_cache": trained.from_cache,
        "loss_table_from_cache": table_cached,
        "dense_metrics_from_cache": dense_cached,
        "lambda_hat": {
            "median": float(np.median(lambdas[certified_idx])) if certified_idx.size else None,
            "q05": float(np.quantile(lambdas[certified_idx], 0.05)) if certified_idx.size else None,
            "q95": float(np.quantile(lambdas[certified_idx], 0.95)) if certified_idx.size else None,
            "deploy": cert.lambda_hat,
        },
        "sparsity_hat": {
            "median": float(np.median(table.sparsity[certified_idx])) if certified_idx.size else None,
            "deploy": cert.sparsity_hat,
            "deploy_model": float(model_sparsity[cert.lambda_index]) if cert.certified else None,
        },
        "deploy": {"certified": cert.certified, "cal_risk": cert.cal_risk, "holdout_risk": deploy_test_risk},
        "coverage": validation.coverage,
        "coverage_ci": [lo, hi],
        "pool_coverage": validation.pool_coverage,
        "iid_coverage": iid.coverage,
        "iid_coverage_ci": list(iid.coverage_interval()),
        "test_risk_median": float(np.nanmedian(validation.test_risk)) if validation.certified.any() else None,
        "violations": int(validation.violated.sum()),
        "certified_fraction": float(validation.certified.mean()),
        "aux_at_deploy": {k: float(v[cert.lambda_index]) for k, v in table.aux.items()} if cert.certified else {},
        "throughput": {
            "dense_pool_s": table.dense_seconds,
            "sweep_s_per_lambda": table.seconds / max(1, lambdas.size),
            "torch_threads": torch.get_num_threads(),
        },
        "timing": timing,
        "files": {**files, **{f"figure_{k}": v for k, v in fig_paths.items()}},
        "output_dir": str(out),
    }
    write_json(summary, out / "summary.json")
    summary["_figure_paths"] = fig_paths
    return summary


def write_splits_csv(path: Path, columns: dict[str, np.ndarray]) -> None:
    """One row per split: ints and bools as written, floats in full precision, NaN as empty —
    the format pandas' ``to_csv`` writes, without importing pandas in every job."""

    def cell(v: Any) -> Any:
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (float, np.floating)):
            return "" if math.isnan(v) else repr(float(v))
        return int(v)

    names = list(columns)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([cell(v) for v in row] for row in zip(*(columns[n].tolist() for n in names), strict=True))


def _fwer(cfg: Config) -> Any:
    from .stats import make_fwer

    return make_fwer(cfg.fwer.name, n_starts=cfg.fwer.n_starts)


