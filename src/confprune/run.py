"""Hydra entry point (`python -m confprune.run`): compose, validate, resume, then run the pipeline.

This module stays light (Hydra, OmegaConf and the config schema): with a parallel launcher the
parent process only composes and dispatches jobs, and each worker imports the heavy pipeline
(``confprune.pipeline``: torch, SciPy) when its first job starts.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Paths in conf/paths resolve against the repository root, whatever the working directory.
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[2]))

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from .errors import ConfigError, OptionError  # noqa: E402
from .guard import refuse  # noqa: E402
from .integrity import content_key  # noqa: E402
from .record import SUMMARY, RunSummary, damaged_artifacts, read_summary  # noqa: E402
from .schema import Config, register_configs  # noqa: E402
from .tracking import tracker  # noqa: E402

log = logging.getLogger("confprune")
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

register_configs()


def to_config(cfg: DictConfig) -> Config:
    """Typed, resolved config object (library functions never see DictConfigs)."""
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, Config)  # free-form groups (model, dataset) come back as plain dicts
    return obj


def config_hash(cfg: Config) -> str:
    """Hash of the resolved config minus where it is written: equal hashes, equal results."""
    plain = asdict(cfg)
    plain["paths"] = {k: v for k, v in plain["paths"].items() if k not in ("output_dir", "output_root")}
    plain.pop("logger", None)
    plain["sweep"] = {k: v for k, v in plain["sweep"].items() if k != "progress"}
    return content_key({"kind": "run", "config": plain})


def completed_run(output_dir: Path, cfg_hash: str) -> RunSummary | None:
    """The summary of a finished run of this exact config in ``output_dir``, else None.

    A directory holding a *different* finished run is never overwritten: that is an error.
    A directory without summary.json is a run that died half-way; it is redone.
    """
    path = output_dir / SUMMARY
    if not path.exists():
        return None
    try:
        previous = read_summary(path)
    except (ValueError, TypeError) as err:
        # summary.json is written atomically: an unreadable one was damaged after the run, and
        # whose run it was cannot be told, so it is never overwritten.
        raise ConfigError(
            "hydra output dir", str(output_dir),
            f"a directory without an unreadable {SUMMARY} ({err}); move it away or pick another hydra.run.dir / "
            "hydra.sweep.dir",
        ) from None
    if previous.config_hash != cfg_hash:
        raise ConfigError(
            "hydra output dir", str(output_dir),
            "a directory without a finished run of another config (it holds config_hash "
            f"{previous.config_hash!r}, this run is {cfg_hash!r}); pick another hydra.run.dir / hydra.sweep.dir",
        )
    damaged = damaged_artifacts(output_dir, previous)
    if damaged:
        log.warning("the finished run in %s has missing or changed files (%s): running it again", output_dir,
                    ", ".join(damaged[:5]))
        return None
    return previous


def run_logged(cfg: DictConfig) -> RunSummary:
    """Validate, then run inside a tracker that is finished even when the job fails.

    Resumable: a job whose output dir already holds the summary of the same resolved config is
    skipped (re-run a sweep with the same ``hydra.sweep.dir`` to finish only what is missing).
    """
    conf = to_config(cfg)
    output_dir = Path(conf.paths.output_dir)
    cfg_hash = config_hash(conf)
    previous = completed_run(output_dir, cfg_hash)
    if previous is not None:  # this exact config was validated and run before
        log.info("skipping %s: it already holds the finished run of this config", output_dir)
        return previous
    from .pipeline import check, run

    check(conf)  # bad input fails here, before any tracker, data or training
    log.info("output dir: %s", output_dir)
    with tracker(
        conf.logger.name, conf.logger.mode, conf.logger.project, conf.logger.entity,
        group=conf.name, job_type="certify", config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
        output_dir=output_dir, tags=conf.logger.tags,
    ) as track:
        result = run(conf, output_dir, config_hash=cfg_hash)
        summary = result.summary
        track.log_summary(summary.to_dict())
        track.log_images(result.figures)
        track.log_artifact(f"loss-table-{conf.name}", "loss-table", [summary.files["losses"]])
        if "pruned_model" in summary.files:
            track.log_artifact(
                f"pruned-model-{conf.name}", "model", [summary.files["pruned_model"], summary.files["certificate"]]
            )
    _report(summary)
    return summary


def _report(s: RunSummary) -> None:
    """One console line per run: what was certified, under which choices, and how it validated."""
    lam = s.lambda_hat.deploy
    deployed = ("nothing certified" if lam is None
                else f"deployed lambda_hat={lam:.2f} (pool sparsity {s.sparsity_hat.deploy:.3f})")
    if s.certified_fraction == 0:
        coverage = f"no split certified anything ({s.n_splits} splits): no claim to check"
    else:
        test = ("coverage undefined (n_test=0)" if s.coverage is None
                else f"coverage {s.coverage:.3f} [{s.coverage_ci[0]:.3f}, {s.coverage_ci[1]:.3f}]")
        coverage = (f"{test}, i.i.d. exact {s.iid_coverage:.3f} over {s.n_splits} splits "
                    f"(target >= {1 - s.delta:g}; {s.certified_fraction:.1%} certified)")
    dense = ", ".join(f"{k} {v:.4f}" for k, v in s.dense.items())
    log.info("%s | %s | %s/%s | %s/%s | alpha=%g delta=%g | %s | %s | dense %s", s.experiment, s.loss, s.criterion,
             s.scope, s.bound, s.fwer, s.alpha, s.delta, deployed, coverage, dense)


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
    from .train import TrainingDiverged

    return isinstance(err, (NoSpaceError, IdxDataError, IdxFormatError, TrainingDiverged))


if __name__ == "__main__":
    main()
