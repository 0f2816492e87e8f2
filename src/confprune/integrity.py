"""Integrity: content keys of cache entries, checksums of weights, fingerprints of data.

Everything that says "this is the same thing" lives here, so that a change to how equality is
decided (what is hashed, in which order) happens in one place: cache keys (``content_key``),
state_dict checksums (``state_dict_checksum``) and data fingerprints (``StreamingFingerprint``,
``fingerprint``). NumPy and hashlib only at import; torch tensors are accepted duck-typed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

CACHE_VERSION = 1


def content_key(payload: Mapping[str, Any]) -> str:
    """First 16 hex digits of the sha256 of a canonical JSON encoding of ``payload``."""
    blob = json.dumps({"cache_version": CACHE_VERSION, **payload}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _tensor_bytes(t: torch.Tensor) -> bytes:
    import torch

    t = t.detach().cpu().contiguous()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes()


def state_dict_checksum(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a state_dict, in sorted key order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


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
        import torch

        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        x, y = x[idx], None if y is None else y[idx]
    fp = StreamingFingerprint()
    fp.update(x, y)
    return fp.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


__all__ = ["CACHE_VERSION", "StreamingFingerprint", "content_key", "file_sha256", "fingerprint", "state_dict_checksum"]
