"""A job's identity and its directory: the typed config of a composed job, the hash that names its
results, and whether its directory already holds its finished run (used by the entry point and by
the guards that run before Hydra writes, without either importing the other)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .integrity import content_key
from .record import SUMMARY, RunSummary, damaged_artifacts, read_summary
from .schema import Config

log = logging.getLogger("confprune")


def to_config(cfg: DictConfig) -> Config:
    """Typed, resolved config object (library functions never see DictConfigs)."""
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, Config)  # free-form groups (model, dataset) come back as plain dicts
    return obj


def config_hash(cfg: Config) -> str:
    """Hash of the resolved config minus where things are (output, cache and data directories:
    moving one must not turn a finished run into "another config"; the data are fingerprinted in
    the run's outputs): equal hashes, equal results."""
    plain = asdict(cfg)
    plain.pop("paths", None)
    plain["dataset"] = {k: v for k, v in plain["dataset"].items() if k != "data_dir"}
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


__all__ = ["completed_run", "config_hash", "to_config"]
