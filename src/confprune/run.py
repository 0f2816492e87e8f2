"""Hydra entry point (`python -m confprune.run`): compose, validate, resume, then run the pipeline.

This module stays light (Hydra, OmegaConf and the config schema): with a parallel launcher the
parent process only composes and dispatches jobs, and each worker imports the heavy pipeline
(``confprune.pipeline``: torch, SciPy) when its first job starts.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Idle OpenMP threads sleep instead of spinning: on a shared machine a spinning thread steals the
# core another job (or another process) needs. Measured on the 2-core machine with one busy
# process beside the benchmark (benchmarks/README.md): the CNN sweep 0.585–0.597 s per λ passive
# vs 0.808–0.846 s spinning, two rounds each. Read by OpenMP when torch loads, so set before any
# job imports it; an OMP_WAIT_POLICY already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Paths in conf/paths resolve against the project root: the nearest ancestor of the working
# directory holding a `.project-root` file, else the working directory; never this file's
# location (site-packages, or another checkout for an editable install). Set before any job, so
# launcher workers inherit the same root (README "Paths and environment variables").
os.environ.setdefault("PROJECT_ROOT", str(next(
    (d for d in (Path.cwd(), *Path.cwd().parents) if (d / ".project-root").is_file()), Path.cwd())))

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from .errors import ConfigError, OptionError  # noqa: E402
from .guard import refuse  # noqa: E402
from .jobs import completed_run, config_hash, to_config  # noqa: E402,F401  (re-exported)
from .record import RunSummary  # noqa: E402
from .schema import Config, register_configs  # noqa: E402
from .tracking import (  # noqa: E402
    NullTracker,
    Plot,
    artifact_names,
    dashboard_summary,
    deployed_cost,
    lambda_curve_columns,
    risk_cost_columns,
    run_identity,
    split_risk_quantiles,
    tracker,
)

log = logging.getLogger("confprune")
# The configs: inside the package in an installed wheel (pyproject.toml maps the top-level conf/
# to confprune/conf), else the top-level conf/ of the source checkout (editable install).
_PACKAGED_CONF = Path(str(files("confprune").joinpath("conf")))
CONF_DIR = str(_PACKAGED_CONF if (_PACKAGED_CONF / "config.yaml").is_file()
               else Path(__file__).resolve().parents[2] / "conf")

register_configs()


def run_logged(cfg: DictConfig) -> RunSummary:
    """Validate, then run inside a tracker that is finished even when the job fails.

    Resumable: a job whose output dir already holds the summary of the same resolved config is
    skipped (re-run a sweep with the same ``hydra.sweep.dir`` to finish only what is missing);
    a skipped job starts no wandb run.
    """
    conf = to_config(cfg)
    output_dir = Path(conf.paths.output_dir)
    cfg_hash = config_hash(conf)
    if output_dir.is_dir():  # temp files a killed run of this directory left behind
        from .cache import clean_orphans

        clean_orphans(output_dir)
        if (output_dir / "figures").is_dir():
            clean_orphans(output_dir / "figures")
    previous = completed_run(output_dir, cfg_hash)
    if previous is not None:  # this exact config was validated and run before
        log.info("skipping %s: it already holds the finished run of this config", output_dir)
        return previous
    from .pipeline import check, run

    check(conf)  # bad input fails here, before any tracker, data or training
    log.info("output dir: %s", output_dir)
    save_config(cfg, conf, output_dir)
    overrides, sweep_dir = _job_context()
    with tracker(
        conf.logger.name, conf.logger.mode, conf.logger.project, conf.logger.entity,
        identity=run_identity(conf, overrides, sweep_dir), config=tracked_config(cfg, cfg_hash),
        output_dir=output_dir,
    ) as track:
        result = run(conf, output_dir, config_hash=cfg_hash,
                     on_train_step=track.log_train_step if track.active else None)
        summary = result.summary
        if track.active:
            log_outcome(track, conf, result)
    _report(summary)
    return summary


def _job_context() -> tuple[list[str], str | None]:
    """The job's task overrides and, in a multirun, its sweep directory (none outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return [], None
    hc = HydraConfig.get()
    return list(hc.overrides.task), (str(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None)


def save_config(cfg: DictConfig, conf: Config, output_dir: Path) -> Path:
    """The resolved config (every interpolation and path filled in) as ``config.yaml`` in the run
    directory, and its tree of choices on the console: what ran, readable without Hydra's
    ``.hydra/`` (which keeps the unresolved composition and the overrides)."""
    from .cache import atomic_write

    output_dir.mkdir(parents=True, exist_ok=True)
    text = OmegaConf.to_yaml(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    path = output_dir / "config.yaml"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    log.info("config (resolved, saved to %s):\n%s", path, config_tree(conf))
    return path


def config_tree(conf: Config) -> str:
    """The choices that make the run, one group per line."""
    from .pruning import FamilySpec

    cal, spec = conf.calibration, FamilySpec.from_config(conf.pruning)
    lines = {
        "experiment": conf.name,
        "model": " ".join(f"{k}={v}" for k, v in conf.model.items()),
        "dataset": " ".join(f"{k}={v}" for k, v in conf.dataset.items() if k not in ("data_dir", "root")),
        "loss": " ".join(f"{k}={v}" for k, v in conf.loss.items()),
        "pruning": spec.label + (f" (+{len(conf.knobs.families) - 1} families: Pareto testing)"
                                 if conf.knobs is not None and len(conf.knobs.families) > 1 else ""),
        "calibration": (f"alpha={cal.alpha} delta={cal.delta} bound={conf.bound.name} fwer={conf.fwer['name']} "
                        f"n_cal={cal.n_cal} n_test={cal.n_test} n_splits={cal.n_splits}"
                        + (f" risks={len(cal.risks)}" if cal.risks else "")),
        "trainer": f"epochs={conf.trainer.epochs} seed={conf.seed}",
        "logger": conf.logger.name,
    }
    return "\n".join(f"  {k:<12} {v}" for k, v in lines.items())


def tracked_config(cfg: DictConfig, cfg_hash: str) -> dict[str, Any]:
    """The config a tracker records: resolved, without ``paths`` (this machine's directories),
    with the ``config_hash`` that names the job's artifacts."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    plain.pop("paths", None)
    return {**plain, "config_hash": cfg_hash}


def log_outcome(track: NullTracker, conf: Config, result: Any) -> None:
    """Log a finished run (a ``pipeline.RunResult``): dashboard summary, λ curve and risk-vs-cost
    tables, figures, artifacts. Everything comes from what the run computed and handed forward
    (its certificate, loss table and validation splits); no file of the run is read back."""
    summary = result.summary
    output_dir = Path(summary.output_dir)
    try:
        run_dir = str(output_dir.relative_to(conf.paths.output_root))
    except ValueError:  # an output dir outside the output root (hydra.run.dir=...): its last two parts
        run_dir = "/".join(output_dir.parts[-2:])
    track.log_summary(dashboard_summary(summary, run_dir))
    certificate = result.certificate if "certificate" in summary.files else None
    if result.table is not None and result.cal_mask is not None:  # one family's λ curve
        quantiles = split_risk_quantiles(result.table.losses, result.cal_mask)
        track.log_table("lambda_curve", lambda_curve_columns(summary, result.table.sparsity, quantiles, certificate),
                        Plot("lines", "lambda", ("pool_risk", "cal_risk_median", "cal_risk_q05", "cal_risk_q95",
                                                 "deploy_cal_risk"), f"risk vs λ ({summary.loss})"))
    cost = deployed_cost(summary)
    track.log_table("risk_vs_cost", risk_cost_columns(summary),
                    Plot("scatter", cost.macs_kind if cost else "nonzero_macs", ("pool_risk",),
                         f"pool risk vs MACs ({summary.loss})"))
    track.log_images(result.figures)
    log_lineage(track, summary, certificate)


def log_lineage(track: NullTracker, summary: RunSummary, certificate: dict[str, Any] | None) -> None:
    """Dense model (an input of the run) → loss table and certified model (its outputs).

    The dense checkpoint is the one the certificate names (none without a certificate, e.g.
    ``export=false``); each artifact's metadata names the artifacts it was derived from. A run
    that certified nothing logs its certificate alone (``certificate-<config hash>``).
    """
    model = (certificate or {}).get("model", {})
    names = artifact_names(summary.config_hash, summary.model, model.get("cache_key"))
    files = summary.files
    inputs: dict[str, str] = {}
    if "dense" in names and model.get("checkpoint"):
        dense_meta = {"model": summary.model, "cache_key": model["cache_key"], "seed": summary.seed,
                      "checksum": model.get("dense_checksum"), "metrics": summary.dense}
        track.log_artifact(names["dense"], "model", [model["checkpoint"]], dense_meta, used=True)
        inputs["dense_model"] = names["dense"]
    table_files = [files[k] for k in ("losses", "splits") if k in files]
    if table_files:
        table_meta = {"config_hash": summary.config_hash, "loss": summary.loss, "criterion": summary.criterion,
                      "structure": summary.structure, "lambdas": len(summary.lambdas),
                      "pool_size": summary.pool_size, "from_cache": summary.loss_table_from_cache, **inputs}
        track.log_artifact(names["loss_table"], "loss-table", table_files, table_meta)
        inputs["loss_table"] = names["loss_table"]
    if certificate is None:
        return
    claim = {"config_hash": summary.config_hash, "certified": bool(certificate.get("certified")),
             "claim": certificate.get("claim"), "lambda_hat": summary.lambda_hat.deploy,
             "sparsity": summary.sparsity_hat.deploy, "alpha": summary.alpha, "delta": summary.delta,
             "loss": summary.loss, "bound": summary.bound, "fwer": summary.fwer, **inputs}
    if "pruned_model" in files:
        pruned = [files[k] for k in ("pruned_model", "pruned_model_sparse") if k in files]
        track.log_artifact(names["certified"], "model", [*pruned, files["certificate"]], claim)
    else:
        track.log_artifact(names["certificate"], "certificate", [files["certificate"]], claim)


def _report(s: RunSummary) -> None:
    """One console line per run: what was certified, under which choices, how it validated, what
    the deployed model costs. Every field is labelled; a coverage is printed only when some split
    certified something (an uncertified split makes no claim to check)."""
    lam = s.lambda_hat.deploy
    deployed = ("nothing certified" if lam is None
                else f"deployed lambda_hat={lam:.2f} (pool sparsity {s.sparsity_hat.deploy:.3f})")
    unit = "draws" if s.fwer == "pareto_testing" else "splits"
    if s.certified_fraction == 0:
        coverage = f"no {unit[:-1]} certified anything ({s.n_splits} {unit}): no claim to check"
    else:
        # The exact check first: i.i.d. draws scored against the pool risk are what the guarantee
        # bounds; the paper's split coverage is noisy and can sit below 1 − δ for a valid rule.
        iid_ci = s.iid_coverage_ci or [float("nan"), float("nan")]
        pareto = s.fwer == "pareto_testing"
        split = ("Pareto testing on each draw" if pareto else "split coverage undefined (n_test=0)" if s.coverage is None
                 else f"split coverage (paper's finite-pool check, noisy; not bounded by the guarantee) "
                      f"{s.coverage:.3f} [{s.coverage_ci[0]:.3f}, {s.coverage_ci[1]:.3f}]")
        coverage = (f"i.i.d. coverage {s.iid_coverage:.3f} [{iid_ci[0]:.3f}, {iid_ci[1]:.3f}] over {s.n_splits} "
                    f"draws (the guarantee's exact check, target >= {1 - s.delta:g}), {split}; "
                    f"{s.certified_fraction:.1%} of {'draws' if pareto else 'splits'} certified")
    dense = ", ".join(f"{k} {v:.4f}" for k, v in s.dense.items()) or "no metrics"
    if s.cost.get("certified_cost") is not None:  # Pareto testing, against each family certified alone
        best, unit = s.cost.get("best_single_family"), {"latency": " s per batch", "bytes": " B"}.get(s.cost["objective"], "")
        deployed += (f"; {s.cost['objective']} {s.cost['certified_cost']:.4g}{unit} (each family alone at best: "
                     + (f"{best:.4g}{unit})" if best is not None else "nothing certified)"))
    log.info("%s | loss %s | criterion %s/%s (%s) | bound %s, fwer %s | alpha=%g delta=%g | %s | %s | %s | dense %s",
             s.experiment, s.loss, s.criterion, s.scope, s.structure, s.bound, s.fwer, s.alpha, s.delta, deployed,
             coverage, _cost_text(s), dense)


def _cost_text(s: RunSummary) -> str:
    """The deployed model's cost against the dense one, e.g. ``cost nonzero MACs 1.22M -> 0.65M
    (1.89x fewer), latency b1 0.152 -> 0.153 ms``."""
    cost = deployed_cost(s)
    if cost is None:
        return "cost: no deployed model" if s.lambda_hat.deploy is None else "cost: not recorded"
    label = "MACs" if cost.macs_kind == "macs" else "nonzero MACs"
    text = (f"cost {label} {cost.dense_macs / 1e6:.3g}M -> {cost.deploy_macs / 1e6:.3g}M "
            f"({cost.macs_reduction:.2f}x fewer)")
    if cost.dense_latency_s is not None and cost.deploy_latency_s is not None:
        text += (f", latency b{cost.latency_batch} {1e3 * cost.dense_latency_s:.3g} -> "
                 f"{1e3 * cost.deploy_latency_s:.3g} ms {_latency_ratio(s, cost.latency_batch)}")
    return text


def _latency_ratio(s: RunSummary, batch: int | None) -> str:
    """The speed ratio at ``batch``, only when the two 10–90% spreads do not overlap: otherwise
    the measured difference is noise on this machine, and the text says so."""
    try:
        dense = s.cost["dense"]["latency"][f"batch_{batch}"]
        deploy = s.cost["deploy"]["latency"][f"batch_{batch}"]
        lo_d, hi_d, lo_p, hi_p = dense["p10_s"], dense["p90_s"], deploy["p10_s"], deploy["p90_s"]
    except (KeyError, TypeError):
        return ""
    if hi_p < lo_d or hi_d < lo_p:
        ratio = dense["median_s"] / deploy["median_s"]
        return f"({ratio:.2f}x {'faster' if ratio > 1 else 'as fast'}, outside the 10-90% spread)"
    return "(within the measured 10-90% spread: no difference shown)"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        summary = run_logged(cfg)
    except ConfigError as err:
        refuse(err)
    except OptionError as err:
        refuse(ConfigError(err.key, err.value, err.allowed))
    except (OSError, ValueError) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not _user_facing(err):
            raise
        print(f"confprune: {err}", file=sys.stderr)
        sys.exit(1)
    return summary.sparsity_hat.deploy


def _user_facing(err: BaseException) -> bool:
    """Errors whose message says all a user needs (data that cannot be prepared, a full disk, a
    diverged training): printed as one line, without a traceback."""
    from .cache import NoSpaceError
    from .data.idx import IdxDataError, IdxFormatError
    from .data.polyp import PolypDataError
    from .train import TrainingDiverged

    return isinstance(err, (NoSpaceError, IdxDataError, IdxFormatError, PolypDataError, TrainingDiverged))


if __name__ == "__main__":
    main()
