"""Datasets behind a small registry: each entry says its task and how to load train and pool data."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class TaskData:
    """Tensors the pipeline needs: training data, the evaluation pool and its provenance."""

    train_inputs: torch.Tensor
    train_targets: torch.Tensor
    pool_inputs: torch.Tensor
    pool_targets: torch.Tensor
    task: str  # classification | segmentation
    synthetic: bool = False
    description: str = ""

    @property
    def pool_size(self) -> int:
        return int(self.pool_inputs.shape[0])

    def pool_fingerprint(self, indices: np.ndarray | None = None) -> str:
        """sha256 of the pool inputs and targets (optionally restricted to ``indices``, in order)."""
        return fingerprint(self.pool_inputs, self.pool_targets, indices)


def fingerprint(inputs: torch.Tensor, targets: torch.Tensor, indices: np.ndarray | None = None) -> str:
    h = hashlib.sha256()
    x, y = inputs, targets
    if indices is not None:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        x, y = x[idx], y[idx]
    for t in (x, y):
        arr = t.detach().cpu().contiguous().numpy()
        h.update(str((arr.dtype.str, arr.shape)).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class DatasetEntry:
    task: str
    pool_size: Callable[[Mapping[str, Any]], int]  # cheap: no loading
    load: Callable[[Mapping[str, Any]], TaskData]


def _limit(n: int, limit: Any) -> int:
    return n if limit is None else min(n, int(limit))


def _load_mnist(cfg: Mapping[str, Any]) -> TaskData:
    from .mnist import load_mnist, normalise

    arrays = load_mnist(cfg["data_dir"], cfg.get("download", True), cfg.get("download_timeout", 10))
    n_train = _limit(60000, cfg.get("train_limit"))
    n_pool = _limit(10000, cfg.get("pool_limit"))
    return TaskData(
        train_inputs=torch.from_numpy(normalise(arrays["train_images"][:n_train])),
        train_targets=torch.from_numpy(arrays["train_labels"][:n_train].astype(np.int64)),
        pool_inputs=torch.from_numpy(normalise(arrays["test_images"][:n_pool])),
        pool_targets=torch.from_numpy(arrays["test_labels"][:n_pool].astype(np.int64)),
        task="classification",
        description=f"MNIST: {n_train} training images; pool = first {n_pool} test images",
    )


DATASETS: dict[str, DatasetEntry] = {
    "mnist": DatasetEntry(
        task="classification",
        pool_size=lambda cfg: _limit(10000, cfg.get("pool_limit")),
        load=_load_mnist,
    ),
}


def load_dataset(cfg: Mapping[str, Any]) -> TaskData:
    return DATASETS[cfg["name"]].load(cfg)
