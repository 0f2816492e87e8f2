"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from the IDX cache, every byte verified; filled
from Debian's dataset-fashion-mnist package (installed, or fetched with apt without root) or the
official mirror (see :mod:`confprune.data.idx`).

Sources, in order: the cache ``<data_dir>/FashionMNIST/raw/`` (torchvision's layout and file
names); the installed Debian files in ``/usr/share/datasets/fashion-mnist/``; ``apt-get download
dataset-fashion-mnist`` + ``dpkg-deb -x`` (no root needed; Debian's registry only); the official
mirror. ``download=False`` means no network: the last two are skipped.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import idx
from .idx import IdxDataError, IdxDataset, IdxFile, Source

if TYPE_CHECKING:
    from . import TaskData

__all__ = [
    "FILES", "MIRROR", "DEBIAN_PACKAGE", "DEBIAN_DIR", "TRAIN_LABEL_COUNTS", "TEST_LABEL_COUNTS",
    "MEAN", "STD", "SHA256", "CLASSES", "DATASET", "IdxDataError",
    "ensure_fashion", "load_fashion", "load_fashion_task", "normalise",
]

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_PACKAGE_PATH = "usr/share/datasets/fashion-mnist"  # where the package puts the four .gz files
DEBIAN_DIR = Path("/") / DEBIAN_PACKAGE_PATH
APT_TIMEOUT_S = 300.0  # whole `apt-get download` (≈31 MB); each connection also gets download_timeout
DPKG_TIMEOUT_S = 120.0
TRAIN_LABEL_COUNTS = (6000,) * 10
TEST_LABEL_COUNTS = (1000,) * 10
# Mean and standard deviation of the 60k training pixels / 255 (0.28604, 0.35302), computed once
# from the verified data and rounded as MNIST's 0.1307 / 0.3081.
MEAN, STD = 0.2860, 0.3530
# sha256 of each decompressed file (IDX header + payload), from Debian's dataset-fashion-mnist
# 0.0~git20200523.55506a9-1. Debian recompressed the .gz (their md5s differ from the ones the
# official README publishes), but the decompressed bytes are the official ones: their md5s
# (f4a8712d…, 9018921c…, 8181f547…, 15d48437…) are those published for the gunzipped originals.
SHA256 = {
    "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
_SHAPES = {"train_images": (60000, 28, 28), "train_labels": (60000,), "test_images": (10000, 28, 28), "test_labels": (10000,)}
_COUNTS = {"train_labels": TRAIN_LABEL_COUNTS, "test_labels": TEST_LABEL_COUNTS}


def _run(cmd: list[str], cwd: Path, timeout: float) -> None:
    """Run ``cmd``; any failure becomes an OSError saying which command and why."""
    shown = " ".join(cmd)
    try:
        subprocess.run(cmd, cwd=cwd, timeout=timeout, check=True, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise OSError(f"{cmd[0]} not found (needs a Debian-based system)") from err
    except subprocess.TimeoutExpired as err:
        raise OSError(f"`{shown}` timed out after {timeout:.0f} s") from err
    except subprocess.CalledProcessError as err:
        tail = (err.stderr or err.stdout or "").strip().splitlines()[-3:]
        raise OSError(f"`{shown}` failed (exit {err.returncode}): {' | '.join(tail)}") from err


def _from_debian_dir(folder: Path, names: tuple[str, ...], timeout: float) -> None:
    if not DEBIAN_DIR.is_dir():
        raise FileNotFoundError(f"{DEBIAN_DIR} does not exist (package {DEBIAN_PACKAGE} not installed)")
    idx.copy_files(DEBIAN_DIR, names, folder)


def _from_apt(folder: Path, names: tuple[str, ...], timeout: float) -> None:
    """``apt-get download`` the package into a scratch folder inside ``folder`` (removed with it
    by the caller), unpack it with ``dpkg-deb -x`` and move the wanted files up."""
    work = folder / "apt"
    work.mkdir()
    _run(["apt-get", "download", "-q", "-o", f"Acquire::http::Timeout={max(1, round(timeout))}", DEBIAN_PACKAGE],
         work, APT_TIMEOUT_S)
    debs = sorted(work.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if not debs:
        raise FileNotFoundError(f"apt-get download left no {DEBIAN_PACKAGE}_*.deb in {work}")
    _run(["dpkg-deb", "-x", str(debs[-1]), str(work / "root")], work, DPKG_TIMEOUT_S)
    idx.copy_files(work / "root" / DEBIAN_PACKAGE_PATH, names, folder)


def _sources() -> list[Source]:
    # Module attributes are read now, not at import, so a patched DEBIAN_DIR or MIRROR counts.
    return [
        Source(f"the installed Debian files in {DEBIAN_DIR}", _from_debian_dir),
        Source(f"`apt-get download {DEBIAN_PACKAGE}` + `dpkg-deb -x` (Debian's package registry)", _from_apt,
               network=True),
        Source(f"download from the official mirror {MIRROR}",
               lambda folder, names, timeout: idx.fetch_files(MIRROR, names, folder, timeout), network=True),
    ]


def _how_to_supply(raw: Path) -> str:
    return (f"Supply the four gzipped IDX files {', '.join(FILES.values())} (the official release, "
            f"{MIRROR}) in {raw}; or `apt-get install {DEBIAN_PACKAGE}` (puts them in {DEBIAN_DIR}); "
            "or allow downloads (download=True) where Debian's registry or the mirror is reachable "
            "(run `apt-get update` first if apt cannot locate the package).")


DATASET = IdxDataset(
    name="Fashion-MNIST",
    folder="FashionMNIST",
    files={k: IdxFile(FILES[k], _SHAPES[k], SHA256[k], _COUNTS.get(k)) for k in FILES},
    sources=_sources,
    how_to_supply=_how_to_supply,
)


def ensure_fashion(data_dir: str | Path, download: bool = True, timeout: float = 10.0, readonly: bool = False) -> Path:
    """Make sure ``data_dir/FashionMNIST/raw`` holds the four files, passing the start-up checks;
    return that folder. Raises :class:`IdxDataError` naming every source tried."""
    return idx.ensure(DATASET, data_dir, download, timeout, readonly)


def load_fashion(
    data_dir: str | Path,
    download: bool = True,
    timeout: float = 10.0,
    keys: tuple[str, ...] = tuple(FILES),
    readonly: bool = False,
) -> dict[str, np.ndarray]:
    """The verified Fashion-MNIST arrays named in ``keys`` (all four by default) as uint8: images
    (N, 28, 28), labels (N,). Each decoded file is hashed; one that fails is repaired once."""
    return idx.load(DATASET, data_dir, keys, download, timeout, readonly)


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) → float32 (N, 1, 28, 28), ((x / 255) − MEAN) / STD with Fashion-MNIST's
    own training statistics."""
    return idx.normalise_images(images, MEAN, STD)


def load_fashion_task(
    data_dir: str | Path,
    download: bool = True,
    download_timeout: float = 10,
    train_limit: int | None = None,
    pool_limit: int | None = None,
    readonly: bool = False,
) -> TaskData:
    """Fashion-MNIST as a classification task: train = the first ``train_limit`` of the 60k
    training images (decoded on first use), pool = the first ``pool_limit`` of the 10k test
    images; inputs float32 (N, 1, 28, 28) normalised with MEAN/STD, targets int64 (N,)."""
    return idx.classification_task(
        lambda keys: load_fashion(data_dir, download, download_timeout, keys, readonly),
        normalise, "Fashion-MNIST", train_limit, pool_limit,
    )
