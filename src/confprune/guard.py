"""Guards that run before Hydra touches an output directory: every job's config is checked and
every target directory is free, before any job starts and before Hydra writes ``.hydra/``.

- :class:`RunGuard` (a Hydra callback, single runs): checks the config, refuses a directory that
  holds another config's run (or an unreadable summary), and holds a lock on the directory for the
  whole run, so two runs never write into one directory at once.
- multiruns: the ``checked`` sweeper (``hydra_plugins.confprune_sweeper``, Hydra's basic sweeper
  plus :func:`check_sweep_batch` and :func:`locked_sweep`) composes and checks *every* job's
  config, and every job's directory, before launching the first one, and holds a lock on the
  sweep directory while the sweep runs.

A refusal prints one message (key, value, what is allowed) and exits with status 2, without a
traceback; ``HYDRA_FULL_ERROR=1`` shows the full trace. Heavy modules (torch) are imported only
when a config is checked.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

from .errors import ConfigError

log = logging.getLogger("confprune")
LOCK = ".confprune.lock"


def refuse(err: ConfigError, where: str = "") -> None:
    """Print one clear message and exit 2 (or raise with HYDRA_FULL_ERROR=1)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(f"confprune: {where}{err}", file=sys.stderr)
    sys.exit(2)


def typed_config(cfg: DictConfig, output_dir: str | Path) -> Any:
    """The typed config of a composed job config whose ``hydra.runtime`` is not set yet."""
    from .jobs import to_config

    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra", None)
        job.paths.output_dir = str(output_dir)
    return to_config(job)


def check_job(cfg: DictConfig, output_dir: str | Path) -> None:
    """Check one job before it starts: its config, and that its directory is free for it."""
    from .jobs import completed_run, config_hash
    from .pipeline import check

    conf = typed_config(cfg, output_dir)
    check(conf)
    completed_run(Path(output_dir), config_hash(conf))  # raises if another config's run is there


@contextmanager
def directory_lock(directory: str | Path) -> Iterator[None]:
    """Hold ``<directory>/.confprune.lock``; refuse at once when another process holds it, or holds
    the lock of a directory above it (a running multirun's sweep directory: a single run into one
    of its job directories would replace that job's results)."""
    path = Path(directory)
    for above in path.resolve().parents:
        if (above / LOCK).is_file():
            held = FileLock(str(above / LOCK))
            try:
                held.acquire(timeout=0)
            except Timeout:
                raise ConfigError("hydra output dir", str(path), f"a directory outside {above}, which a running "
                                  "confprune multirun holds (it is locked)") from None
            held.release()
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path / LOCK))
        lock_file = open(path / LOCK, "a")  # noqa: SIM115 - only to learn now whether it can be written
        lock_file.close()
    except OSError as err:
        raise ConfigError("hydra output dir", str(path), f"a directory this user can write ({err.strerror or err}): "
                          "set hydra.run.dir / hydra.sweep.dir or CONFPRUNE_OUTPUT_ROOT") from None
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError("hydra output dir", str(path),
                          "a directory no other confprune run is using right now (it is locked)") from None
    try:
        yield
    finally:
        lock.release()


class RunGuard(Callback):
    """Single runs: check the config and the directory before Hydra writes into it."""

    def __init__(self) -> None:
        self._lock: Any = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = config.hydra.run.dir
        try:
            check_job(config, run_dir)
            self._lock = directory_lock(run_dir)
            self._lock.__enter__()
        except ConfigError as err:
            refuse(err)
        except Exception as err:  # noqa: BLE001 - Hydra turns a callback's exception into a warning and runs
            # the job anyway (unchecked, unlocked): any failure of the check stops it here instead.
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"confprune: the config check failed before the run started: {type(err).__name__}: "
                  f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}", file=sys.stderr)
            sys.exit(2)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None


@contextmanager
def locked_sweep(sweep_dir: str | Path) -> Iterator[None]:
    """Hold the sweep directory's lock while a multirun launches into it (see :func:`directory_lock`)."""
    try:
        with directory_lock(sweep_dir):
            yield
    except ConfigError as err:
        refuse(err)


def check_sweep_batch(loader: Any, master: DictConfig, batch: Sequence[Sequence[str]], first: int) -> None:
    """Compose and check every job of a batch (config and directory) before any is launched."""
    for offset, overrides in enumerate(batch):
        cfg = loader.load_sweep_config(master_config=master, sweep_overrides=list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.num = first + offset
        job_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        try:
            check_job(cfg, job_dir)
        except ConfigError as err:
            refuse(err, where=f"job {first + offset} ({' '.join(overrides)}): ")
