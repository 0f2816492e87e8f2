"""Experiment tracking: wandb (offline by default) or nothing, always finished even on failure."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class NullTracker:
    def log_summary(self, summary: Mapping[str, Any]) -> None: ...
    def log_images(self, paths: Mapping[str, str]) -> None: ...
    def log_artifact(self, name: str, kind: str, files: list[str]) -> None: ...


class WandbTracker(NullTracker):
    def __init__(self, run: Any) -> None:
        self.run = run

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        flat = {k: v for k, v in _flatten(summary).items() if isinstance(v, (int, float, str, bool)) or v is None}
        self.run.summary.update(flat)

    def log_images(self, paths: Mapping[str, str]) -> None:
        import wandb

        self.run.log({k: wandb.Image(v) for k, v in paths.items() if v.endswith(".png")})

    def log_artifact(self, name: str, kind: str, files: list[str]) -> None:
        import wandb

        art = wandb.Artifact(name, type=kind)
        for f in files:
            if Path(f).exists():
                art.add_file(f)
        self.run.log_artifact(art)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


@contextmanager
def tracker(
    name: str, mode: str, project: str, entity: str | None, group: str, job_type: str,
    config: Mapping[str, Any], output_dir: str | Path, tags: list[str] | None = None,
) -> Iterator[NullTracker]:
    """A tracker for one job; the wandb run is finished whether the job succeeds or fails."""
    if name != "wandb" or mode == "disabled":
        yield NullTracker()
        return
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    run = wandb.init(
        project=project, entity=entity, group=group, job_type=job_type, mode=mode,
        dir=str(output_dir), config=dict(config), tags=list(tags or []), reinit="finish_previous",
    )
    exit_code = 1
    try:
        yield WandbTracker(run)
        exit_code = 0
    finally:
        run.finish(exit_code=exit_code)
