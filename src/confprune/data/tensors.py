"""Your data in a plain on-disk form (``dataset=tensors``): a folder of NumPy arrays.

``path`` holds ``x.npy`` (inputs, first axis = samples) and, when labelled, ``y.npy`` (integer
class labels, shape (N,), for classification). Without ``y.npy`` the data are unlabelled: only
label-free losses (disagreement, tv_distance, …) can be certified on them, which the config check
enforces before any work. ``train_path`` (the same layout, optional) is the training data: needed
only to train a model or to draw a data-informed criterion's batch; a pretrained model
(``model=checkpoint``) is certified without it. Arrays are read with ``allow_pickle=False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import OptionError
from . import TaskData, limit

#: an unlabelled pool's targets (never read: only label-free losses are allowed on it)
NO_LABEL = -1


class TensorsError(OptionError):
    """A data folder that cannot be used: the option (``path``, ``train_path``; the config check
    names it ``dataset.<key>``), the value and what is allowed."""


def _array(folder: str, name: str, key: str, *, required: bool, mmap: bool = False) -> np.ndarray | None:
    f = Path(folder) / name
    if not f.is_file():
        if required:
            raise TensorsError(key, folder, f"a folder holding {name} (inputs, first axis = samples)")
        return None
    try:
        return np.load(f, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError) as err:
        raise TensorsError(key, str(f), f"a .npy array readable without pickle ({err})") from None


def _check_folder(path: str | None, key: str) -> str:
    if not isinstance(path, str) or not path:
        raise TensorsError(key, path, "the folder holding x.npy (and y.npy when labelled)")
    if not Path(path).is_dir():
        raise TensorsError(key, path, "an existing folder holding x.npy (and y.npy when labelled)")
    return path


def _labels(x: np.ndarray, y: np.ndarray | None, key: str) -> None:
    if y is None:
        return
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise TensorsError(key, f"y.npy {y.dtype}{list(y.shape)}", f"integer class labels of shape ({x.shape[0]},), "
                           f"one per row of x.npy")
    if y.size and int(y.min()) < 0:
        raise TensorsError(key, f"y.npy min {int(y.min())}", "class labels ≥ 0")


def tensors_input_shape(path: str, **_: Any) -> tuple[int, ...]:
    x = _array(_check_folder(path, "path"), "x.npy", "path", required=True, mmap=True)
    return tuple(int(d) for d in x.shape[1:])


def tensors_pool_size(path: str, pool_limit: int | None = None, **_: Any) -> int:
    x = _array(_check_folder(path, "path"), "x.npy", "path", required=True, mmap=True)
    return limit(int(x.shape[0]), pool_limit)


def tensors_labelled(path: str, **_: Any) -> bool:
    """Whether the pool folder holds labels (``y.npy``)."""
    return (Path(_check_folder(path, "path")) / "y.npy").is_file()


def tensors_output_shape(path: str, **_: Any) -> None:
    """Any per-sample output (the model's own: logits for the classification losses)."""
    return None


def load_tensors_task(path: str, train_path: str | None = None, pool_limit: int | None = None,
                      train_limit: int | None = None, data_dir: str | None = None) -> TaskData:
    """The pool from ``path`` (and the training data from ``train_path``), as float32 inputs and
    int64 labels (``NO_LABEL`` everywhere when unlabelled). ``data_dir`` is ignored (the folders
    are given)."""
    x = _array(_check_folder(path, "path"), "x.npy", "path", required=True)
    y = _array(path, "y.npy", "path", required=False)
    _labels(x, y, "path")
    n = limit(int(x.shape[0]), pool_limit)
    pool_x = torch.from_numpy(np.ascontiguousarray(x[:n], dtype=np.float32))
    pool_y = (torch.from_numpy(np.asarray(y[:n], dtype=np.int64)) if y is not None
              else torch.full((n,), NO_LABEL, dtype=torch.long))
    if train_path is not None:
        tx = _array(_check_folder(train_path, "train_path"), "x.npy", "train_path", required=True)
        ty = _array(train_path, "y.npy", "train_path", required=False)
        _labels(tx, ty, "train_path")
        if tx.shape[1:] != x.shape[1:]:
            raise TensorsError("train_path", train_path, f"inputs of the pool's shape {list(x.shape[1:])} "
                               f"(x.npy there has {list(tx.shape[1:])})")
        m = limit(int(tx.shape[0]), train_limit)
        train_x = torch.from_numpy(np.ascontiguousarray(tx[:m], dtype=np.float32))
        train_y = (torch.from_numpy(np.asarray(ty[:m], dtype=np.int64)) if ty is not None
                   else torch.full((m,), NO_LABEL, dtype=torch.long))
    else:
        train_x, train_y = pool_x[:0], pool_y[:0]
    return TaskData(train_inputs=train_x, train_targets=train_y, pool_inputs=pool_x, pool_targets=pool_y,
                    task="classification", synthetic=False, labelled=y is not None,
                    description=f"tensors: pool {n} points from {path} ({'labelled' if y is not None else 'unlabelled'})"
                    + (f"; training {train_x.shape[0]} points from {train_path}" if train_path else "; no training data"))


__all__ = ["NO_LABEL", "TensorsError", "load_tensors_task", "tensors_input_shape", "tensors_labelled",
           "tensors_output_shape", "tensors_pool_size"]
