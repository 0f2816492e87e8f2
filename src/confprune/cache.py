"""Content-addressed cache entries and atomic writes: a file lock so that concurrent jobs compute an
entry once instead of racing on it; every write goes through a temp file and a rename.

Keys (what determines an entry) come from :mod:`confprune.integrity`."""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

log = logging.getLogger(__name__)
T = TypeVar("T")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


_FILE_MODE = 0o666 & ~_umask()  # what open() would give: group-readable under the usual umask
_HOST = socket.gethostname().replace(".", "-")


#: A secret of this user's (or shared by trusted users through the environment), with which every
#: cache entry is sealed: an entry that someone without it wrote — a forged loss table, a checkpoint
#: copied into a shared cache — fails its seal and is recomputed, never trusted.
SECRET_ENV = "CONFPRUNE_CACHE_SECRET"


def _secret_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "confprune" / "cache-secret"


def cache_secret() -> bytes:
    """The sealing secret: ``$CONFPRUNE_CACHE_SECRET``, else a random one kept (mode 0600) in
    ``~/.config/confprune/cache-secret``, made on first use."""
    env = os.environ.get(SECRET_ENV)
    if env:
        return env.encode()
    path = _secret_file()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes()
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_hex(32).encode())
    return path.read_bytes()


def _seal_path(path: Path) -> Path:
    return path.with_name(path.name + ".seal")


def _mac(path: Path) -> str:
    return hmac.new(cache_secret(), path.read_bytes(), hashlib.sha256).hexdigest()


def seal(path: str | Path) -> None:
    """Write the entry's seal (an HMAC of its bytes with :func:`cache_secret`) beside it."""
    path = Path(path)
    digest = _mac(path)
    atomic_write(_seal_path(path), lambda tmp: Path(tmp).write_text(digest))


def check_seal(path: str | Path) -> None:
    """Raise ValueError unless the entry's seal matches its bytes under this user's secret."""
    path = Path(path)
    seal_file = _seal_path(path)
    if not seal_file.is_file():
        raise ValueError("it has no seal (written before entries were sealed, or not by confprune)")
    if not hmac.compare_digest(seal_file.read_text().strip(), _mac(path)):
        raise ValueError("its seal does not match its bytes under this user's cache secret (edited, forged, or "
                         f"written with another secret: share a cache between trusted users with ${SECRET_ENV})")


class NoSpaceError(OSError):
    """The disk is full: one message naming the path (nothing already written is lost)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(errno.ENOSPC, f"no space left on the device holding {path}")
        self.path = str(path)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a partial file.

    The temp file (``.<name>.<host>.<pid>.<random>.tmp`` beside ``path``) gets the permissions
    ``open()`` would give (the umask applies: outputs are group-readable, not mkstemp's 0600); it
    is removed on any failure, and a full disk raises :class:`NoSpaceError` naming ``path``.
    Temp files of processes that died on this host are removed by :func:`clean_orphans`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise NoSpaceError(path) from err
        if isinstance(err, RuntimeError) and "write" in str(err).lower():
            # torch.save reports a full disk (or any failed write) as a RuntimeError of its stream
            # writer: an OSError here, so that callers keep what they computed (cache: in memory).
            if shutil.disk_usage(path.parent).free < 2**20:
                raise NoSpaceError(path) from err
            raise OSError(errno.EIO, f"could not write {path}: {str(err).splitlines()[0]}") from err
        raise


def clean_orphans(directory: str | Path) -> int:
    """Remove temp files that a process of this host left in ``directory`` when it died (killed
    mid-write); another live process's temp files are left alone. Returns how many were removed."""
    removed = 0
    for tmp in Path(directory).glob(f".*.{_HOST}.*.tmp"):
        pid = tmp.name[: -len(".tmp")].rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writable(directory: Path) -> bool:
    """Whether ``directory`` can be written, or created (its nearest existing ancestor is writable)."""
    path = directory.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.access(path, os.W_OK)


@contextmanager
def locked(path: str | Path) -> Iterator[bool]:
    """Hold ``<path>.lock`` while computing or reading the entry at ``path``; yields whether the
    cache is writable. A read-only cache (nowhere to put a lock) is used without a lock: nothing
    is ever written into it, so there is no race to guard against."""
    path = Path(path)
    if not _writable(path.parent):
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        yield True


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
    When the entry cannot be written (a read-only cache, a full disk) that is reported and the
    computed value is returned all the same: minutes of training are never thrown away because
    the cache could not keep them.
    """
    path = Path(path)
    with locked(path) as writable:
        if writable:
            clean_orphans(path.parent)
        if path.exists():
            try:
                check_seal(path)
                return load(path), True
            except Exception as err:  # any defect: report and recompute
                log.warning("%s cache entry %s is corrupt or mismatched (%s); %s", what, path, err, redo)
        value = compute()
        if keep(value):
            if not writable:
                log.warning("%s cache %s is read-only: the result is used but not cached", what, path.parent)
            else:
                try:
                    atomic_write(path, lambda tmp: save(value, tmp))
                    seal(path)
                except OSError as err:
                    log.warning("could not cache the %s at %s (%s); continuing with it in memory", what, path,
                                err.strerror or err)
        return value, False
