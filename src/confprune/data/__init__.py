"""Datasets behind a small registry: each entry says its task and how to load train and pool data.

A dataset config's keys (besides ``name``) are its loader's keyword arguments: ``dataset=mnist``
calls ``load_mnist_task(data_dir=..., pool_limit=..., ...)``; an unknown or misspelt key is refused
at start-up by the config check, naming it (see :func:`confprune.schema.check_options`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..integrity import fingerprint


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
    labelled: bool = True  # False: the pool has no labels (only label-free losses apply)
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


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its task, its loader and a cheap pool-size function (no loading;
    None when the size is known only after listing files). Both take the config's keyword arguments."""

    task: str
    load: Callable[..., TaskData]
    pool_size: Callable[..., int | None]
    input_shape: Callable[..., tuple[int, ...]]  # one sample's input shape (cheap; same arguments)
    output_shape: Callable[..., tuple[int, ...] | None]  # what a model must return per sample (None: any)
    labelled: Callable[..., bool] = lambda **_: True  # whether the pool has labels (cheap; same arguments)
    trains: Callable[..., bool] = lambda **_: True  # whether the config gives training data


def limit(n: int, k: int | None) -> int:
    """``n`` capped at ``k`` (``None``: no cap); the ``train_limit`` / ``pool_limit`` options."""
    return n if k is None else min(n, int(k))


def _idx_input_shape(**options: Any) -> tuple[int, ...]:
    return (1, 28, 28)


def _ten_classes(**options: Any) -> tuple[int, ...]:
    return (10,)


def _idx_pool_size(data_dir: str, download: bool = True, download_timeout: float = 10,
                   train_limit: int | None = None, pool_limit: int | None = None, readonly: bool = False) -> int:
    """MNIST-like IDX datasets: the pool is the first ``pool_limit`` of the 10k test images."""
    return limit(10000, pool_limit)


def _registry() -> dict[str, DatasetEntry]:
    from .fashion import load_fashion_task
    from .mnist import load_mnist_task
    from .polyp import load_polyp_task, polyp_input_shape, polyp_output_shape, polyp_pool_size
    from .tensors import (
        load_tensors_task,
        tensors_input_shape,
        tensors_labelled,
        tensors_output_shape,
        tensors_pool_size,
    )
    from .tones import load_tones_task, tones_input_shape, tones_output_shape, tones_pool_size

    return {
        "mnist": DatasetEntry("classification", load_mnist_task, _idx_pool_size, _idx_input_shape, _ten_classes),
        "fashion_mnist": DatasetEntry("classification", load_fashion_task, _idx_pool_size, _idx_input_shape,
                                      _ten_classes),
        "polypgen": DatasetEntry("segmentation", load_polyp_task, polyp_pool_size, polyp_input_shape,
                                 polyp_output_shape),
        "tones": DatasetEntry("pitch", load_tones_task, tones_pool_size, tones_input_shape, tones_output_shape,
                              trains=lambda **_: False),
        "tensors": DatasetEntry("classification", load_tensors_task, tensors_pool_size, tensors_input_shape,
                                tensors_output_shape, labelled=tensors_labelled,
                                trains=lambda train_path=None, **_: train_path is not None),
    }


DATASETS: dict[str, DatasetEntry] = _registry()


def dataset_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The loader's keyword arguments in a dataset config (every key but ``name``)."""
    return {k: v for k, v in dict(cfg).items() if k != "name"}


def load_dataset(cfg: Mapping[str, Any]) -> TaskData:
    """Load the dataset a config names: ``DATASETS[cfg["name"]].load(**options)``."""
    return DATASETS[cfg["name"]].load(**dataset_options(cfg))


def pool_size(cfg: Mapping[str, Any]) -> int | None:
    """The evaluation pool's size without loading anything (None: known only after listing)."""
    return DATASETS[cfg["name"]].pool_size(**dataset_options(cfg))


