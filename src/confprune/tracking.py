"""Experiment tracking: one wandb run per job (offline by default) or nothing, finished even on failure.

What one job shows in wandb (docs/dashboards.md has a dashboard recipe):

- identity: a name made of the job's overrides (:func:`run_name`), one group per sweep
  (:func:`run_group`), tags ``loss:…``, ``bound:…``, ``fwer:…``, ``criterion:…``,
  ``structure:…``, ``model:…``, ``dataset:…`` (:func:`run_tags`), job_type ``certify``;
- config: the resolved config without ``paths`` (local directories), plus ``config_hash``;
- training curves ``train/loss``, ``train/accuracy``, … against the step key ``train/step``, when
  the job trains the dense model (a cached checkpoint logs none);
- summary: :func:`dashboard_summary` (scalars only, no local absolute paths);
- tables ``lambda_curve`` (:func:`lambda_curve_columns`) and ``risk_vs_cost``
  (:func:`risk_cost_columns`), each with a plot;
- artifacts named by hash (:func:`artifact_names`), with lineage: the dense model is an input of
  the run, the loss table and the certified model are its outputs.

This module imports neither wandb nor torch at import time (the Hydra launcher's parent process
imports it); wandb is imported when a run starts.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .record import RunSummary
    from .schema import Config

log = logging.getLogger(__name__)

JOB_TYPE = "certify"  # a job runs every stage up to the certificate; see docs/dashboards.md
TRAIN_STEP = "train/step"  # the step key of the training curves
MAX_NAME = 128  # wandb's limit for run names and groups
MAX_TAG = 64  # wandb's limit for a tag

# Overrides that say where or how a job runs, not what it computes: left out of run names.
_RUNTIME_KEYS = ("experiment", "logger", "paths", "hydra", "figures", "export", "sweep.progress",
                 "sweep.num_threads", "sweep.device", "sweep.tune_allocator")
# Summary fields that are local paths or per-λ lists (the lists go into the λ-curve table).
_SUMMARY_SKIPPED = ("files", "output_dir", "artifacts", "lambdas", "pool_risk", "cost", "score_inputs")


# --------------------------------------------------------------------------------------------
# Who a run is


@dataclass(frozen=True)
class RunIdentity:
    """How a job's wandb run is named, grouped, tagged and typed."""

    name: str
    group: str
    tags: list[str] = field(default_factory=list)
    job_type: str = JOB_TYPE


def run_name(overrides: Sequence[str], experiment: str) -> str:
    """A short, stable run name from the job's task overrides (Hydra's ``hydra.overrides.task``).

    ``key=value`` pairs, keys shortened to their last component unless two share it
    (``calibration.alpha=0.05`` → ``alpha=0.05``), sorted as shown, without the overrides that only say where or
    how the job runs (experiment, logger, paths, figures, export, threads, device, progress). No
    such override: the experiment name. Names longer than wandb's 128 characters are cut and end
    in a hash of the full name, so different long names stay different. Rules are ours.
    """
    pairs: list[tuple[str, str]] = []
    for text in overrides:
        key, sep, value = text.partition("=")
        key = key.lstrip("+")
        parts = [p for p in key.replace("/", ".").split(".") if p]
        if not sep or not parts or _is_runtime(".".join(parts)):
            continue
        pairs.append((".".join(parts), value))
    if not pairs:
        return experiment[:MAX_NAME]
    last = [k.split(".")[-1] for k, _ in pairs]
    shown = sorted(f"{short if last.count(short) == 1 else key}={value}"
                   for (key, value), short in zip(pairs, last, strict=True))
    return _fit(",".join(shown))


def run_group(experiment: str, sweep_dir: str | Path | None) -> str:
    """One group per sweep: ``<experiment>/<sweep dir name>`` (by default the sweep's timestamp).
    A single run (``sweep_dir`` None) joins the group named after its experiment, so repeated
    single runs of one experiment are compared together (ours)."""
    if sweep_dir is None:
        return experiment[:MAX_NAME]
    return _fit(f"{experiment}/{Path(sweep_dir).name}")


def run_tags(cfg: Config) -> list[str]:
    """``key:value`` tags for the choices a panel filters on, then the user's ``logger.tags``."""
    choices = {
        "loss": cfg.loss["name"],
        "bound": cfg.bound.name,
        "fwer": cfg.fwer["name"],
        "criterion": cfg.pruning["criterion"],
        "structure": cfg.pruning.get("structure", "unstructured"),
        "model": cfg.model["name"],
        "dataset": cfg.dataset["name"],
    }
    tags = [f"{k}:{v}"[:MAX_TAG] for k, v in choices.items()]
    return tags + [t[:MAX_TAG] for t in cfg.logger.tags if t and t[:MAX_TAG] not in tags]


def run_identity(cfg: Config, overrides: Sequence[str], sweep_dir: str | Path | None) -> RunIdentity:
    """Name, group, tags and job_type of a job: ``overrides`` are Hydra's task overrides,
    ``sweep_dir`` the multirun's sweep directory (None for a single run)."""
    return RunIdentity(run_name(overrides, cfg.name), run_group(cfg.name, sweep_dir), run_tags(cfg))


def _is_runtime(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in _RUNTIME_KEYS)


def _fit(text: str) -> str:
    if len(text) <= MAX_NAME:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: MAX_NAME - 9]}~{digest}"


# --------------------------------------------------------------------------------------------
# What a run shows


@dataclass(frozen=True)
class DeployedCost:
    """What the deployed model costs against the dense one (from ``summary.cost``).

    ``macs_kind`` is the count that the exported model's execution saves: ``macs`` for channel
    pruning (a physically smaller model), ``nonzero_macs`` for unstructured pruning (dense kernels
    still run every MAC; a sparse kernel could skip the zero ones). Latencies are median seconds
    per forward pass at ``latency_batch`` (the smallest measured batch), None when not measured.
    """

    macs_kind: str
    dense_macs: float
    deploy_macs: float
    latency_batch: int | None
    dense_latency_s: float | None
    deploy_latency_s: float | None

    @property
    def macs_reduction(self) -> float:
        """Dense MACs / deployed MACs (2.0: half the multiply-adds)."""
        return self.dense_macs / self.deploy_macs if self.deploy_macs else math.inf

    @property
    def latency_speedup(self) -> float | None:
        if self.dense_latency_s is None or not self.deploy_latency_s:
            return None
        return self.dense_latency_s / self.deploy_latency_s


def deployed_cost(summary: RunSummary) -> DeployedCost | None:
    """The deployed model's cost against the dense model; None when nothing was deployed or the
    run recorded no cost."""
    dense, deploy = summary.cost.get("dense"), summary.cost.get("deploy")
    if not dense or not deploy:
        return None
    kind = summary.cost.get("kind", "nonzero_macs")  # the MAC count that measures the family's saving
    batch = _smallest_batch(dense.get("latency"))
    return DeployedCost(kind, float(dense[kind]), float(deploy[kind]), batch,
                        _latency(dense.get("latency"), batch), _latency(deploy.get("latency"), batch))


def dashboard_summary(summary: RunSummary, run_dir: str) -> dict[str, Any]:
    """The wandb summary of a run: flat scalar keys a panel can plot, filter or group by.

    Keys are those of ``summary.json`` flattened with ``/`` (``lambda_hat/deploy``,
    ``sparsity_hat/deploy``, ``sparsity_hat/median``, ``coverage``, ``iid_coverage``,
    ``certified_fraction``, ``alpha``, ``bound``, ``loss``, ``criterion``, ``dense/accuracy``,
    ``timing/total_s``, …) plus ``coverage_ci/low|high``, ``iid_coverage_ci/low|high``, the cost
    of the dense and the deployed model (``cost/<dense|deploy>/<parameters|macs|nonzero_macs|bytes>``,
    ``cost/<dense|deploy>/latency_ms/batch_<b>``), ``cost/macs_reduction``, ``cost/macs_kind``,
    ``cost/latency_speedup`` and ``run_dir`` (the run directory relative to the output root).
    Local files and directories are left out: a string value that is an absolute path never
    enters the summary. Lists (per-λ values) go into the ``lambda_curve`` table instead.
    """
    plain = {k: v for k, v in summary.to_dict().items() if k not in _SUMMARY_SKIPPED}
    out = {k: v for k, v in _flatten(plain).items() if _is_scalar(v) and not _is_local_path(v)}
    for key in ("coverage_ci", "iid_coverage_ci"):
        interval = getattr(summary, key)
        out[f"{key}/low"], out[f"{key}/high"] = interval if interval is not None else (None, None)
    for which in ("dense", "deploy"):
        entry = summary.cost.get(which) or {}
        for metric in ("parameters", "parameters_total", "macs", "nonzero_macs", "bytes"):
            if metric in entry:
                out[f"cost/{which}/{metric}"] = entry[metric]
        for batch, stats in (entry.get("latency") or {}).items():
            if batch.startswith("batch_"):
                out[f"cost/{which}/latency_ms/{batch}"] = 1e3 * stats["median_s"]
    cost = deployed_cost(summary)
    if cost is not None:
        out["cost/macs_kind"] = cost.macs_kind
        out["cost/macs_reduction"] = cost.macs_reduction
        out["cost/latency_speedup"] = cost.latency_speedup
    out["run_dir"] = run_dir
    return out


def split_risk_quantiles(losses: np.ndarray, cal_mask: np.ndarray) -> np.ndarray:
    """(3, G') calibration risk over the validation splits at each λ: 5%, 50% and 95% quantiles.

    ``losses`` (G', N) is the loss table, ``cal_mask`` (S, N) the splits' calibration sets (bool
    membership or multiplicities); a split's calibration risk is its mean loss over its set,
    computed as the split validation computes it (float64).
    """
    weights = np.asarray(cal_mask, dtype=np.float64)
    risk = np.asarray(losses, dtype=np.float64) @ weights.T / weights.sum(axis=1)  # (G', S)
    return np.quantile(risk, [0.05, 0.5, 0.95], axis=1)


def lambda_curve_columns(
    summary: RunSummary,
    sparsity: Sequence[float],
    risk_quantiles: np.ndarray | None = None,
    certificate: Mapping[str, Any] | None = None,
) -> dict[str, list[Any]]:
    """Columns of the ``lambda_curve`` table, one row per evaluated λ (G' rows).

    ``lambda``; ``sparsity`` (fraction of the pruning pool removed); ``pool_risk`` (mean loss over
    the pool); ``cal_risk_q05``, ``cal_risk_median``, ``cal_risk_q95`` over the validation splits
    (from ``risk_quantiles``, shape (3, G'), see :func:`split_risk_quantiles`); ``deploy_cal_risk``
    and ``deploy_p_value`` of the deployment calibration set (from the certificate: absent
    without one, e.g. ``export=false``); ``deployed`` (the row of the deployed λ̂); ``parameters``,
    ``macs`` and ``nonzero_macs`` when ``summary.cost["curve"]`` has them for these λ.
    """
    lambdas = [float(x) for x in summary.lambdas]
    g = len(lambdas)
    if len(sparsity) != g or len(summary.pool_risk) != g:
        raise ValueError(f"the λ curve needs {g} values per column (sparsity {len(sparsity)}, "
                         f"pool risk {len(summary.pool_risk)})")
    cols: dict[str, list[Any]] = {
        "lambda": lambdas,
        "sparsity": [float(x) for x in sparsity],
        "pool_risk": [float(x) for x in summary.pool_risk],
    }
    if risk_quantiles is not None:
        q = np.asarray(risk_quantiles, dtype=np.float64)
        if q.shape != (3, g):
            raise ValueError(f"risk quantiles of shape {q.shape}, expected (3, {g})")
        cols["cal_risk_q05"], cols["cal_risk_median"], cols["cal_risk_q95"] = (q[i].tolist() for i in range(3))
    if certificate is not None:
        cols["deploy_cal_risk"] = _aligned(certificate.get("cal_risk_per_lambda"), g)
        cols["deploy_p_value"] = _aligned(certificate.get("p_values"), g)
    lam_hat = summary.lambda_hat.deploy
    cols["deployed"] = [lam_hat is not None and math.isclose(lam, lam_hat) for lam in lambdas]
    curve = summary.cost.get("curve") or {}
    if curve and len(curve.get("lambda", [])) == g and np.allclose(curve["lambda"], lambdas):
        for metric in ("parameters", "macs", "nonzero_macs"):
            if metric in curve:
                cols[metric] = list(curve[metric])
    return cols


def risk_cost_columns(summary: RunSummary) -> dict[str, list[Any]]:
    """Columns of the ``risk_vs_cost`` table: the dense model, then every λ of the cost curve.

    ``point`` (``dense``, ``grid`` or ``certified``), ``lambda`` (None for the dense model),
    ``pool_risk``, ``parameters``, ``macs``, ``nonzero_macs`` and ``latency_ms`` (median at the
    smallest measured batch; None where not measured). Empty without a cost curve.
    """
    cost, curve = summary.cost, summary.cost.get("curve") or {}
    if not curve or not cost.get("dense"):
        return {}
    batch = _smallest_batch(cost["dense"].get("latency"))
    measured = {p["lambda"]: _latency(p, batch) for p in cost.get("latency") or []}
    risk = dict(zip(summary.lambdas, summary.pool_risk, strict=True))
    lam_hat = summary.lambda_hat.deploy
    rows = [{"point": "dense", "lambda": None, "pool_risk": summary.dense_risk,
             **{m: cost["dense"].get(m) for m in ("parameters", "macs", "nonzero_macs")},
             "latency_ms": _ms(measured.get(None))}]
    for i, lam in enumerate(curve["lambda"]):
        rows.append({"point": "certified" if lam_hat is not None and math.isclose(lam, lam_hat) else "grid",
                     "lambda": lam, "pool_risk": risk.get(lam),
                     **{m: curve[m][i] for m in ("parameters", "macs", "nonzero_macs") if m in curve},
                     "latency_ms": _ms(measured.get(lam))})
    return {k: [r.get(k) for r in rows] for k in rows[0]}


def artifact_names(config_hash: str, model: str, model_key: str | None) -> dict[str, str]:
    """Artifact names: ``dense-<model>-<model cache key>`` (the key of what determines the
    trained weights: jobs that share a checkpoint share the artifact), ``loss-table-<config
    hash>``, ``certified-<model>-<config hash>`` and, for a run that certified nothing,
    ``certificate-<config hash>`` (one per job configuration: the jobs of a sweep differ)."""
    names = {"loss_table": f"loss-table-{config_hash}", "certified": f"certified-{model}-{config_hash}",
             "certificate": f"certificate-{config_hash}"}
    if model_key:
        names["dense"] = f"dense-{model}-{model_key}"
    return names


# --------------------------------------------------------------------------------------------
# Trackers


@dataclass(frozen=True)
class Plot:
    """A plot of a logged table: ``lines`` (one line per column in ``ys`` against ``x``) or
    ``scatter`` (``ys[0]`` against ``x``)."""

    kind: str  # lines | scatter
    x: str
    ys: tuple[str, ...]
    title: str


class NullTracker:
    """Tracks nothing (``logger=none`` or wandb disabled); ``active`` is False so that callers
    skip work done only for a tracker."""

    active = False

    def log_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        """A training step's metrics; the ``on_step`` callback of :func:`confprune.train.train_or_load`."""

    def log_summary(self, summary: Mapping[str, Any]) -> None: ...

    def log_table(self, key: str, columns: Mapping[str, Sequence[Any]], plot: Plot | None = None) -> None: ...

    def log_images(self, paths: Mapping[str, str]) -> None: ...

    def log_artifact(self, name: str, kind: str, files: Sequence[str], metadata: Mapping[str, Any] | None = None,
                     used: bool = False) -> None:
        """An artifact of the run: an output, or (``used``) an input of it."""


class WandbTracker(NullTracker):
    active = True

    def __init__(self, run: Any) -> None:
        self.run = run
        # The training curves have their own step key, independent of wandb's implicit _step.
        run.define_metric(TRAIN_STEP)
        run.define_metric("train/*", step_metric=TRAIN_STEP)

    def log_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log({TRAIN_STEP: step, **{f"train/{k}": v for k, v in metrics.items()}})

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        flat = {k: v for k, v in _flatten(summary).items() if _is_scalar(v) and not _is_local_path(v)}
        self.run.summary.update(flat)

    def log_table(self, key: str, columns: Mapping[str, Sequence[Any]], plot: Plot | None = None) -> None:
        import wandb

        if not columns:
            return
        names = list(columns)
        table = wandb.Table(columns=names, data=[list(row) for row in zip(*columns.values(), strict=True)])
        logged: dict[str, Any] = {key: table}
        if plot is not None and plot.kind == "lines":
            present = [y for y in plot.ys if y in columns]
            logged[f"{key}_plot"] = wandb.plot.line_series(
                xs=list(columns[plot.x]), ys=[list(columns[y]) for y in present], keys=present, title=plot.title,
                xname=plot.x)
        elif plot is not None and plot.kind == "scatter" and plot.ys[0] in columns:
            logged[f"{key}_plot"] = wandb.plot.scatter(table, plot.x, plot.ys[0], title=plot.title)
        self.run.log(logged)

    def log_images(self, paths: Mapping[str, str]) -> None:
        import wandb

        images = {f"figures/{k}": wandb.Image(v) for k, v in paths.items() if v.endswith(".png")}
        if images:
            self.run.log(images)

    def log_artifact(self, name: str, kind: str, files: Sequence[str], metadata: Mapping[str, Any] | None = None,
                     used: bool = False) -> None:
        import wandb

        present = [f for f in files if Path(f).is_file()]
        if not present:
            log.warning("wandb artifact %s not logged: none of its files exist", name)
            return
        art = wandb.Artifact(name, type=kind, metadata=dict(metadata or {}))
        for f in present:
            # Immutable: the run's files and the cache entries are never rewritten, so wandb reads
            # them when it syncs instead of copying each one into its staging area.
            art.add_file(f, name=Path(f).name, policy="immutable")
        if not used:
            self.run.log_artifact(art)
        elif self.run.offline:
            # run.use_artifact refuses offline runs; for a new artifact it logs it marked "use
            # after commit", which is what this records: `wandb sync` then declares the input.
            self.run._log_artifact(art, is_user_created=True, use_after_commit=True)
        else:
            self.run.use_artifact(art)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def _is_local_path(v: Any) -> bool:
    return isinstance(v, str) and (os.path.isabs(v) or v.startswith("~"))


def _aligned(values: Sequence[Any] | None, n: int) -> list[Any]:
    """``values`` cut or padded with None to n entries (a certificate covers the evaluated λ)."""
    values = list(values or [])[:n]
    return values + [None] * (n - len(values))


def _smallest_batch(latency: Mapping[str, Any] | None) -> int | None:
    batches = [int(k.split("_", 1)[1]) for k in (latency or {}) if k.startswith("batch_")]
    return min(batches) if batches else None


def _latency(latency: Mapping[str, Any] | None, batch: int | None) -> float | None:
    if not latency or batch is None or f"batch_{batch}" not in latency:
        return None
    return float(latency[f"batch_{batch}"]["median_s"])


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1e3 * seconds


@contextmanager
def tracker(
    name: str, mode: str, project: str, entity: str | None, *, identity: RunIdentity, config: Mapping[str, Any],
    output_dir: str | Path,
) -> Iterator[NullTracker]:
    """A tracker for one job; the wandb run is finished whether the job succeeds or fails.

    ``name`` is ``logger.name`` (``wandb`` or ``none``); ``mode`` is ``logger.mode`` unless the
    environment sets ``WANDB_MODE`` (the environment wins: ``WANDB_MODE=disabled`` turns wandb off
    for every job, as the tests do). Offline runs are written to
    ``<output_dir>/wandb/offline-run-*`` (``wandb sync <output_dir>/wandb/offline-run-*``).
    """
    mode = os.environ.get("WANDB_MODE") or mode
    if name != "wandb" or mode == "disabled":
        yield NullTracker()
        return
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    Path(output_dir).mkdir(parents=True, exist_ok=True)  # wandb writes <output_dir>/wandb from the start

    run = wandb.init(
        project=project, entity=entity, name=identity.name, group=identity.group, job_type=identity.job_type,
        tags=list(identity.tags), mode=mode, dir=str(output_dir), config=dict(config), reinit="finish_previous",
    )
    exit_code = 1
    try:
        yield WandbTracker(run)
        exit_code = 0
    finally:
        run.finish(exit_code=exit_code)
