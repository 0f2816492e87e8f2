"""Content-addressed cache entries and atomic writes: a file lock so that concurrent jobs compute an
entry once instead of racing on it; every write goes through a temp file and a rename.

Keys (what determines an entry) come from :mod:`confprune.integrity`."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

log = logging.getLogger(__name__)
T = TypeVar("T")


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold ``<path>.lock`` while computing or reading the entry at ``path``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        yield


def cached(
    path: str | Path,
    load: Callable[[Path], T],
    compute: Callable[[], T],
    save: Callable[[T, str], None],
    what: str,
    redo: str = "recomputing",
    keep: Callable[[T], bool] = lambda value: True,
) -> tuple[T, bool]:
    """The entry at ``path``: ``load(path)`` under its lock, else ``compute()`` and, when
    ``keep(value)``, ``save(value, tmp)`` written atomically. Returns (value, from_cache).

    ``load`` raises on any defect (unreadable, wrong key, failed checksum): the entry is reported
    as ``<what> cache entry … is corrupt or mismatched (…); <redo>`` and recomputed, never trusted.
    """
    path = Path(path)
    with locked(path):
        if path.exists():
            try:
                return load(path), True
            except Exception as err:  # any defect: report and recompute
                log.warning("%s cache entry %s is corrupt or mismatched (%s); %s", what, path, err, redo)
        value = compute()
        if keep(value):
            atomic_write(path, lambda tmp: save(value, tmp))
        return value, False
