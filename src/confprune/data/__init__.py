"""Datasets behind a small registry: each entry says its task and how to load train and pool data."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


class _Deferred:
    """Dataclass field that may be given as a zero-argument function: it is called on first
    access and its result kept (a run with a cached model never decodes the training images)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            raise AttributeError  # no default value for the dataclass field
        value = obj.__dict__[self.slot]
        if callable(value) and not isinstance(value, torch.Tensor):
            value = obj.__dict__[self.slot] = value()
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.slot] = value


@dataclass
class TaskData:
    """Tensors the pipeline needs: training data, the evaluation pool and its provenance.

    ``train_inputs`` may be passed as a zero-argument function returning the tensor; it is
    called the first time the attribute is read.
    """

    train_inputs: torch.Tensor = _Deferred()  # type: ignore[assignment]
    train_targets: torch.Tensor
    pool_inputs: torch.Tensor
    pool_targets: torch.Tensor
    task: str  # classification | segmentation
    synthetic: bool = False
    description: str = ""
    # training-time augmentation: (inputs, targets, seed) -> (inputs, targets), applied per batch
    augment: Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def pool_size(self) -> int:
        return int(self.pool_inputs.shape[0])

    def pool_fingerprint(self, indices: np.ndarray | None = None) -> str:
        """sha256 of the pool inputs and targets (optionally restricted to ``indices``, in order).
        The whole-pool digest is computed once (the pool tensors are never modified)."""
        if indices is not None:
            return fingerprint(self.pool_inputs, self.pool_targets, indices)
        if "_pool_digest" not in self.__dict__:
            self.__dict__["_pool_digest"] = fingerprint(self.pool_inputs, self.pool_targets)
        return self.__dict__["_pool_digest"]


class StreamingFingerprint:
    """sha256 of a data set fed batch by batch: inputs and targets hashed separately, then
    combined with dtypes, per-sample shapes and the count. Any batching gives the same digest."""

    def __init__(self) -> None:
        self._hx, self._hy = hashlib.sha256(), hashlib.sha256()
        self._meta: tuple | None = None
        self.count = 0

    def update(self, inputs: torch.Tensor, targets: torch.Tensor | None) -> None:
        x = inputs.detach().cpu().contiguous()
        y = None if targets is None else targets.detach().cpu().contiguous()
        meta = (str(x.dtype), tuple(x.shape[1:]), None if y is None else (str(y.dtype), tuple(y.shape[1:])))
        if self._meta is not None and meta != self._meta:
            raise ValueError(f"batches disagree in dtype or per-sample shape: {meta} vs {self._meta}")
        self._meta = meta
        self._hx.update(x.numpy().tobytes())
        if y is not None:
            self._hy.update(y.numpy().tobytes())
        self.count += int(x.shape[0])

    def hexdigest(self) -> str:
        h = hashlib.sha256(repr((self._meta, self.count)).encode())
        h.update(self._hx.digest())
        h.update(self._hy.digest())
        return h.hexdigest()


def fingerprint(inputs: torch.Tensor, targets: torch.Tensor | None, indices: np.ndarray | None = None) -> str:
    """sha256 of (inputs, targets), optionally restricted to ``indices`` in that order."""
    x, y = inputs, targets
    if indices is not None:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        x, y = x[idx], None if y is None else y[idx]
    fp = StreamingFingerprint()
    fp.update(x, y)
    return fp.hexdigest()


@dataclass(frozen=True)
class DatasetEntry:
    task: str
    pool_size: Callable[[Mapping[str, Any]], int | None]  # cheap: no loading (None: known only after listing)
    load: Callable[[Mapping[str, Any]], TaskData]


def _limit(n: int, limit: Any) -> int:
    return n if limit is None else min(n, int(limit))


def _load_mnist(cfg: Mapping[str, Any]) -> TaskData:
    from .mnist import load_mnist, normalise

    args = (cfg["data_dir"], cfg.get("download", True), cfg.get("download_timeout", 10))
    arrays = load_mnist(*args, keys=("train_labels", "test_images", "test_labels"))
    n_train = _limit(60000, cfg.get("train_limit"))
    n_pool = _limit(10000, cfg.get("pool_limit"))

    def train_inputs() -> torch.Tensor:  # 60k images: decoded only when training or scoring needs them
        return torch.from_numpy(normalise(load_mnist(*args, keys=("train_images",))["train_images"][:n_train]))

    return TaskData(
        train_inputs=train_inputs,
        train_targets=torch.from_numpy(arrays["train_labels"][:n_train].astype(np.int64)),
        pool_inputs=torch.from_numpy(normalise(arrays["test_images"][:n_pool])),
        pool_targets=torch.from_numpy(arrays["test_labels"][:n_pool].astype(np.int64)),
        task="classification",
        description=f"MNIST: {n_train} training images; pool = first {n_pool} test images",
    )


def _polyp_root(cfg: Mapping[str, Any]) -> tuple[Path, bool]:
    """(root, synthetic): the real archive when dataset.root is set, else the synthetic tree."""
    if cfg.get("root"):
        return Path(cfg["root"]), False
    return Path(cfg["data_dir"]) / "PolypGen_synthetic", True


def _polyp_split(cfg: Mapping[str, Any]) -> tuple[list[int], list[int]]:
    return [int(c) for c in cfg["train_centres"]], [int(c) for c in cfg["pool_centres"]]


def _random_group_split(samples: list, pool_fraction: float, seed: int) -> tuple[list, list]:
    """Patient-disjoint random split (ours): the unit is a sample's group — its sequence folder
    (one patient) or its centre — and whole groups go to the pool with a seeded draw."""
    groups = sorted({s.group for s in samples})
    if len(groups) < 2:
        raise ValueError(f"dataset.split=random_groups needs at least 2 groups, found {groups}")
    order = np.random.default_rng(int(seed)).permutation(len(groups))
    n_pool = min(len(groups) - 1, max(1, round(pool_fraction * len(groups))))
    pool_groups = {groups[i] for i in order[:n_pool]}
    return [s for s in samples if s.group not in pool_groups], [s for s in samples if s.group in pool_groups]


def _polyp_pool_size(cfg: Mapping[str, Any]) -> int | None:
    if cfg.get("split", "centres") != "centres":
        return None  # decided by a seeded draw over groups: checked once the data is listed
    root, synthetic = _polyp_root(cfg)
    _, pool_c = _polyp_split(cfg)
    if synthetic:
        syn = cfg["synthetic"]
        n = syn["n_per_centre"] * len(pool_c) + (syn["n_sequences"] * syn["frames"] if cfg.get("pool_sequences") else 0)
    else:
        n = sum(len(list((root / f"data_C{c}" / f"images_C{c}").glob("*.jpg"))) for c in pool_c)
        if cfg.get("pool_sequences"):
            n += len(list((root / "sequenceData" / "positive").glob("seq*/images_seq*/*.jpg")))
    return _limit(n, cfg.get("pool_limit"))


def _load_polyp(cfg: Mapping[str, Any]) -> TaskData:
    from .polyp import generate_synthetic, is_synthetic, list_samples, load_arrays, make_augment

    root, synthetic = _polyp_root(cfg)
    if synthetic:
        syn = cfg["synthetic"]
        generate_synthetic(root, syn["n_per_centre"], syn["n_sequences"], syn["frames"], syn["seed"])
    train_c, pool_c = _polyp_split(cfg)
    mode = cfg.get("split", "centres")
    if mode == "random_groups":
        everything = list_samples(root, sorted(set(train_c) | set(pool_c)), sequences=bool(cfg.get("pool_sequences")))
        train, pool = _random_group_split(everything, float(cfg.get("pool_fraction", 0.5)), int(cfg.get("split_seed", 0)))
    elif mode == "centres":
        if set(train_c) & set(pool_c):
            raise ValueError(f"dataset.train_centres {train_c} and dataset.pool_centres {pool_c} overlap")
        train = list_samples(root, train_c, sequences=False)
        pool = list_samples(root, pool_c, sequences=bool(cfg.get("pool_sequences")))
    else:
        raise ValueError(f"dataset.split={mode!r} is not allowed; choose centres or random_groups")
    train = train[: _limit(len(train), cfg.get("train_limit"))]
    pool = pool[: _limit(len(pool), cfg.get("pool_limit"))]
    size = int(cfg["image_size"])
    xt, yt = load_arrays(train, size)
    xp, yp = load_arrays(pool, size)
    synthetic = synthetic or is_synthetic(root)
    return TaskData(
        train_inputs=torch.from_numpy(xt), train_targets=torch.from_numpy(yt),
        pool_inputs=torch.from_numpy(xp), pool_targets=torch.from_numpy(yp),
        task="segmentation", synthetic=synthetic,
        description=(f"{'SYNTHETIC stand-in for ' if synthetic else ''}PolypGen at {root}: "
                     f"train groups {sorted({s.group for s in train})} ({len(train)} images), "
                     f"pool groups {sorted({s.group for s in pool})} ({len(pool)} images), {size}×{size}"),
        augment=make_augment() if cfg.get("augment", True) else None,
    )


DATASETS: dict[str, DatasetEntry] = {
    "polypgen": DatasetEntry(task="segmentation", pool_size=_polyp_pool_size, load=_load_polyp),
    "mnist": DatasetEntry(
        task="classification",
        pool_size=lambda cfg: _limit(10000, cfg.get("pool_limit")),
        load=_load_mnist,
    ),
}


def load_dataset(cfg: Mapping[str, Any]) -> TaskData:
    return DATASETS[cfg["name"]].load(cfg)
