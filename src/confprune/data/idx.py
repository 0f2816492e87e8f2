"""IDX datasets whose every byte is verified: read/write IDX, cheap start-up checks, payload
hashes checked at decode time, an ordered list of sources and verify-then-publish repair.

Shared by MNIST and Fashion-MNIST (both: four gzipped IDX files in ``<data_dir>/<folder>/raw``,
torchvision's layout). What is checked, and when:

* start-up (:func:`ensure`, cheap): every file's IDX header against the expected shape and the
  gzip trailer's size field against the header (catches truncation without decompressing);
  label files are read in full (small) and checked by class counts and sha256;
* decode (:func:`load`): image files, read anyway when decoded, are hashed, so one changed pixel
  fails there; the 60k training images are decoded only when training or scoring needs them.

The reference is the sha256 of a file's *decompressed* contents (IDX header + payload: what
``gunzip -c FILE | sha256sum`` prints), so it holds whatever compressor wrote the ``.gz``.

A file that fails (missing, truncated, corrupt gzip, altered bytes) is logged with its name and
the reason and repaired once: the sources are tried in order, each writes into a private staging
folder inside the cache, each file is verified there and only then renamed over the cache entry
(``os.replace``, atomic), so a source that serves wrong bytes never clobbers anything. When no
source works, one :class:`IdxDataError` names the file, what was wrong, every source tried and
how to supply the files. ``readonly=True`` uses verified existing files only: nothing is
written or downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..cache import atomic_write

if TYPE_CHECKING:
    from . import TaskData

log = logging.getLogger(__name__)

UBYTE = 0x08  # the only IDX element type these datasets use
# Errors that mean "the gzip stream is damaged" (bad magic or CRC, cut short, bad deflate data).
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)
# Errors a source may raise; each is reported and the next source tried.
SOURCE_ERRORS = (OSError, ValueError, ImportError, KeyError, EOFError, zlib.error, subprocess.SubprocessError)


class IdxFormatError(ValueError):
    """A file that is not the expected IDX content (damaged gzip, bad header, wrong shape, class
    counts or sha256). ``str()`` is ``"<path>: <reason>"``; both are kept as attributes."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


class IdxDataError(FileNotFoundError):
    """The verified files could not be provided: the message names the file or directory, what
    was wrong, every source tried and how to supply the files. A ``FileNotFoundError`` (the
    verified file is not to be had), so callers that caught the old MNIST error still do."""


# --------------------------------------------------------------------------- IDX reading/writing


def _parse_header(head: bytes, path: str | Path) -> tuple[int, ...]:
    """Dimensions from the first bytes of an unsigned-byte IDX file (magic 0x0000 08 ndim)."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != UBYTE:
        raise IdxFormatError(path, "not an unsigned-byte IDX file")
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        raise IdxFormatError(path, f"IDX header cut short ({len(head)} bytes for {ndim} dimensions)")
    return tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))


def idx_header_bytes(shape: Sequence[int]) -> bytes:
    """The IDX header of a uint8 array of ``shape``: magic (0, 0, 0x08, ndim) + big-endian dims."""
    return bytes([0, 0, UBYTE, len(shape)]) + b"".join(int(d).to_bytes(4, "big") for d in shape)


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped when the name ends in ``.gz``) unsigned-byte IDX file.

    Returns
    -------
    np.ndarray of uint8, shape as the header says (read-only: a view on the decoded bytes).

    Raises
    ------
    IdxFormatError
        Damaged gzip stream (bad magic, CRC, cut short), bad header, or a payload whose length
        disagrees with the header; the message names the file.
    FileNotFoundError
        The file is missing.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except GZIP_ERRORS as err:
        raise IdxFormatError(path, f"corrupt gzip stream ({type(err).__name__}: {err})") from err
    dims = _parse_header(data, path)
    offset = 4 + 4 * len(dims)
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise IdxFormatError(path, f"IDX header says {expected} values, file has {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file, atomically and byte-reproducibly (mtime 0)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = idx_header_bytes(array.shape)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as gz:
            gz.write(header)
            gz.write(memoryview(array).cast("B"))

    atomic_write(path, write)


def payload_sha256(array: np.ndarray) -> str:
    """sha256 of the IDX encoding of a uint8 array (header + payload): equal to the sha256 of the
    decompressed file it was read from, since :func:`read_idx` checks the header, element type and
    length, so header and payload are exactly rebuilt from the array."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    digest = hashlib.sha256(idx_header_bytes(array.shape))
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def read_header(path: str | Path) -> tuple[int, ...]:
    """Dimensions from a gzipped IDX header, checked against the gzip trailer's size field
    (uncompressed length mod 2^32), which catches truncated files without decompressing them."""
    try:
        with gzip.open(path, "rb") as fh:
            head = fh.read(4)
            ndim = head[3] if len(head) == 4 else 0
            dims = _parse_header(head + fh.read(4 * ndim), path)
    except GZIP_ERRORS as err:
        raise IdxFormatError(path, f"corrupt gzip stream ({type(err).__name__}: {err})") from err
    with open(path, "rb") as raw:
        raw.seek(-4, 2)
        isize = int.from_bytes(raw.read(4), "little")
    if isize != (4 + 4 * len(dims) + int(np.prod(dims))) % 2**32:
        raise IdxFormatError(path, f"truncated (gzip size field {isize} does not match the IDX header {dims})")
    return dims


# --------------------------------------------------------------------------- dataset description


@dataclass(frozen=True)
class IdxFile:
    """One file of a dataset: its name in the cache, its array shape, the sha256 of its
    decompressed contents and, for a label file, the reference count of each class."""

    name: str
    shape: tuple[int, ...]
    sha256: str
    label_counts: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Source:
    """A place the files can come from. ``fill(folder, names, timeout)`` writes the named files
    (gzipped IDX) into ``folder`` or raises; ``network`` sources are skipped when downloads are
    off. What it writes is verified before it reaches the cache."""

    description: str
    fill: Callable[[Path, tuple[str, ...], float], None]
    network: bool = False


@dataclass(frozen=True)
class IdxDataset:
    """A dataset of IDX files cached in ``<data_dir>/<folder>/raw``.

    ``sources`` is called each time the files need writing (so its entries see the module
    settings of that moment) and returns them in the order to try; ``how_to_supply(raw)`` is the
    last line of every error.
    """

    name: str
    folder: str
    files: Mapping[str, IdxFile]
    sources: Callable[[], Sequence[Source]]
    how_to_supply: Callable[[Path], str]

    def raw_dir(self, data_dir: str | Path) -> Path:
        return Path(data_dir) / self.folder / "raw"


# --------------------------------------------------------------------------- verification


def read_verified(spec: IdxFile, path: Path, reader: Callable[[Path], np.ndarray] = read_idx) -> np.ndarray:
    """Decode ``path`` with ``reader`` and check shape, class counts (label files) and sha256.

    Returns
    -------
    np.ndarray of uint8, shape ``spec.shape``.

    Raises
    ------
    IdxFormatError
        Anything differs from the reference (the reason says what).
    FileNotFoundError
        The file is missing.
    """
    array = reader(path)
    if tuple(array.shape) != spec.shape:
        raise IdxFormatError(path, f"shape {tuple(array.shape)}, expected {spec.shape}")
    if spec.label_counts is not None:
        counts = tuple(int(c) for c in np.bincount(array.ravel(), minlength=len(spec.label_counts)))
        if counts != spec.label_counts:
            raise IdxFormatError(path, f"label counts {counts} differ from the reference {spec.label_counts}")
    digest = payload_sha256(array)
    if digest != spec.sha256:
        raise IdxFormatError(path, f"contents altered: sha256 of the decompressed file is {digest}, "
                                   f"the reference is {spec.sha256}")
    return array


def _cheap_problem(spec: IdxFile, path: Path) -> str | None:
    """None when ``path`` passes the start-up checks (header + size field; label files in full)."""
    try:
        dims = read_header(path)
        if dims != spec.shape:
            return f"shape {dims} in the IDX header, expected {spec.shape}"
        if spec.label_counts is not None:
            read_verified(spec, path)
    except FileNotFoundError:
        return "missing"
    except IdxFormatError as err:
        return err.reason
    except OSError as err:  # e.g. shorter than a gzip trailer, or unreadable
        return f"unreadable ({type(err).__name__}: {err})"
    return None


def check_files(dataset: IdxDataset, raw: Path, keys: Sequence[str] | None = None) -> dict[str, str]:
    """The start-up checks of the files ``keys`` (all by default) in ``raw``.

    Returns
    -------
    dict key → reason for each file that fails (empty when all pass). Image payloads are not
    hashed here; that happens when they are decoded (:func:`load`).
    """
    problems = {}
    for key in keys or tuple(dataset.files):
        spec = dataset.files[key]
        reason = _cheap_problem(spec, raw / spec.name)
        if reason is not None:
            problems[key] = reason
    return problems


def _listing(dataset: IdxDataset, raw: Path, problems: Mapping[str, str]) -> str:
    return "\n".join(f"  - {raw / dataset.files[k].name}: {why}" for k, why in problems.items())


def _staging_dir(raw: Path) -> Path:
    """A private folder inside the cache for a source's files (same file system, so publishing
    is an atomic rename). Raises OSError when ``raw`` cannot be created or written."""
    raw.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".staging-", dir=raw))


def repair(
    dataset: IdxDataset,
    raw: Path,
    problems: Mapping[str, str],
    download: bool = True,
    timeout: float = 10.0,
    readonly: bool = False,
) -> None:
    """Replace the failing files ``problems`` (key → reason) in ``raw`` with verified copies from
    the first source that provides them all; a partial success is kept and the rest asked of the
    next source. Raises :class:`IdxDataError` when ``readonly``, when ``raw`` is not writable, or
    when every source fails; the message lists every source tried and why it failed."""
    names = ", ".join(f.name for f in dataset.files.values())
    if readonly:
        raise IdxDataError(
            f"{dataset.name}: readonly=True, so nothing is written or downloaded, and these cached "
            f"files fail verification:\n{_listing(dataset, raw, problems)}\n"
            f"{dataset.how_to_supply(raw)} Or run once without readonly to let confprune fill {raw}."
        )
    try:
        staging = _staging_dir(raw)
    except OSError as err:
        raise IdxDataError(
            f"{dataset.name}: the data directory {raw} is not writable ({type(err).__name__}: "
            f"{err.strerror or err}{f': {err.filename}' if err.filename else ''}), and these files "
            f"need writing:\n{_listing(dataset, raw, problems)}\nMake {raw} writable, choose a "
            f"writable data_dir, or supply the files ({names}) there and use readonly=True. "
            f"{dataset.how_to_supply(raw)}"
        ) from err
    pending = dict(problems)
    tried = [f"the cache {raw}: " + ", ".join(dataset.files[k].name for k in problems) + " failed the checks"]
    try:
        for source in dataset.sources():
            if source.network and not download:
                tried.append(f"{source.description}: skipped (download=False)")
                continue
            wanted = tuple(dataset.files[k].name for k in pending)
            try:
                source.fill(staging, wanted, timeout)
            except SOURCE_ERRORS as err:
                tried.append(f"{source.description}: {type(err).__name__}: {err}")
                log.info("%s: %s failed: %s", dataset.name, source.description, err)
                continue
            failed = []
            for key in list(pending):
                spec = dataset.files[key]
                try:
                    read_verified(spec, staging / spec.name)
                except (IdxFormatError, FileNotFoundError) as err:
                    failed.append(f"{spec.name}: {err.reason if isinstance(err, IdxFormatError) else 'not provided'}")
                    continue
                os.replace(staging / spec.name, raw / spec.name)  # verified: publish atomically
                log.info("%s: %s verified and written from %s", dataset.name, raw / spec.name, source.description)
                del pending[key]
            if not pending:
                return
            if failed:
                tried.append(f"{source.description}: " + "; ".join(failed))
                log.warning("%s: %s gave files that fail verification, not used: %s",
                            dataset.name, source.description, "; ".join(failed))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    raise IdxDataError(
        f"{dataset.name}: no verified copy of these files could be obtained:\n"
        f"{_listing(dataset, raw, pending)}\nTried, in order:\n  - " + "\n  - ".join(tried)
        + f"\n{dataset.how_to_supply(raw)}"
    )


def ensure(
    dataset: IdxDataset, data_dir: str | Path, download: bool = True, timeout: float = 10.0, readonly: bool = False
) -> Path:
    """Make sure ``<data_dir>/<folder>/raw`` holds the files, passing the start-up checks
    (repairing them from the sources unless ``readonly``); return that folder."""
    raw = dataset.raw_dir(data_dir)
    problems = check_files(dataset, raw)
    if problems:
        for key, why in problems.items():
            level = logging.INFO if why == "missing" else logging.WARNING
            log.log(level, "%s: %s; %s", raw / dataset.files[key].name, why,
                    "not repaired (readonly)" if readonly else "getting it from the sources")
        repair(dataset, raw, problems, download, timeout, readonly)
    return raw


def load(
    dataset: IdxDataset,
    data_dir: str | Path,
    keys: Sequence[str],
    download: bool = True,
    timeout: float = 10.0,
    readonly: bool = False,
    reader: Callable[[Path], np.ndarray] = read_idx,
) -> dict[str, np.ndarray]:
    """The verified arrays named in ``keys``: start-up checks (:func:`ensure`), then each file
    decoded and hashed; a file that fails is logged, repaired once (unless ``readonly``) and
    read again. ``reader`` decodes one file (default :func:`read_idx`).

    Returns
    -------
    dict key → uint8 array of the file's reference shape, e.g. (60000, 28, 28) images.
    """
    raw = ensure(dataset, data_dir, download, timeout, readonly)
    arrays = {}
    for key in keys:
        spec = dataset.files[key]
        path = raw / spec.name
        try:
            arrays[key] = read_verified(spec, path, reader)
            continue
        except IdxFormatError as err:
            reason = err.reason
        except FileNotFoundError:
            reason = "missing"
        log.warning("%s: %s; %s", path, reason, "not repaired (readonly)" if readonly else "repairing it from the sources")
        repair(dataset, raw, {key: reason}, download, timeout, readonly)
        try:
            arrays[key] = read_verified(spec, path, reader)
        except (IdxFormatError, FileNotFoundError) as err:  # e.g. replaced meanwhile by another process
            raise IdxDataError(
                f"{dataset.name}: {path} still fails after repair ({err}). {dataset.how_to_supply(raw)}"
            ) from err
    return arrays


# --------------------------------------------------------------------------- sources and tasks


def fetch_files(base_url: str, names: Sequence[str], folder: Path, timeout: float) -> None:
    """Download ``base_url + name`` for each name into ``folder`` (atomic writes). Raises OSError
    naming the URL on the first failure."""
    for name in names:
        url = base_url + name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                payload = resp.read()
        except OSError as err:
            raise OSError(f"{url}: {err}") from err
        atomic_write(folder / name, lambda tmp, data=payload: Path(tmp).write_bytes(data))


def copy_files(source_dir: Path, names: Sequence[str], folder: Path) -> None:
    """Copy the named files from ``source_dir`` into ``folder`` (atomic writes)."""
    for name in names:
        src = source_dir / name
        atomic_write(folder / name, lambda tmp, src=src: shutil.copyfile(src, tmp))


def normalise_images(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 (N, 28, 28) → float32 (N, 1, 28, 28), ((x / 255) − mean) / std.
    In place on one float32 copy: the same values as the out-of-place formula, a third of the memory."""
    x = images.astype(np.float32)[:, None]
    x /= 255.0
    x -= mean
    x /= std
    return x


def _first(n: int, limit: int | None) -> int:
    return n if limit is None else min(n, int(limit))


def classification_task(
    load_arrays: Callable[[tuple[str, ...]], dict[str, np.ndarray]],
    normalise: Callable[[np.ndarray], np.ndarray],
    title: str,
    train_limit: int | None = None,
    pool_limit: int | None = None,
) -> TaskData:
    """An MNIST-layout dataset as a classification task: train = the first ``train_limit`` of the
    training set (images decoded on first use), pool = the first ``pool_limit`` test images.

    ``load_arrays(keys)`` returns the verified uint8 arrays of the files named ``train_images``,
    ``train_labels``, ``test_images``, ``test_labels``; ``normalise`` maps uint8 (N, 28, 28) to
    float32 (N, 1, 28, 28). Targets are int64 (N,).
    """
    import torch

    from . import TaskData  # here, not at import: data/__init__ may import this module

    arrays = load_arrays(("train_labels", "test_images", "test_labels"))
    n_train = _first(arrays["train_labels"].shape[0], train_limit)
    n_pool = _first(arrays["test_labels"].shape[0], pool_limit)

    def train_inputs() -> torch.Tensor:  # 60k images: decoded only when training or scoring needs them
        return torch.from_numpy(normalise(load_arrays(("train_images",))["train_images"][:n_train]))

    return TaskData(
        train_inputs=train_inputs,
        train_targets=torch.from_numpy(arrays["train_labels"][:n_train].astype(np.int64)),
        pool_inputs=torch.from_numpy(normalise(arrays["test_images"][:n_pool])),
        pool_targets=torch.from_numpy(arrays["test_labels"][:n_pool].astype(np.int64)),
        task="classification",
        description=f"{title}: {n_train} training images; pool = first {n_pool} test images",
    )
