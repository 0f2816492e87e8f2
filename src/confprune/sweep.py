"""The λ sweep: the per-sample loss table L (G × N) over the evaluation pool, computed once.

Dense outputs are computed once; for each λ the pruned weights are built from the dense ones
(never cumulatively) and passed to ``torch.func.functional_call``, so the module is never copied
or modified. An optional ``stop`` rule ends the sweep early (fixed-sequence testing has stopped
for every split, so later rows cannot change any result).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from .cache import cached, content_key
from .data import StreamingFingerprint
from .losses import Loss
from .pruning import PruningFamily
from .stats import check_loss_table

log = logging.getLogger(__name__)

StopRule = Callable[[int, np.ndarray], bool]


@dataclass
class LossTable:
    """Per-sample losses over the pool for the evaluated prefix of the λ grid."""

    grid: np.ndarray  # (G,) the full grid fixed in advance
    losses: np.ndarray  # (G', N), G' ≤ G rows evaluated (early stop)
    sparsity: np.ndarray  # (G',) exact fraction of the pruning pool removed
    aux: dict[str, np.ndarray] = field(default_factory=dict)  # (G',) pool means, e.g. abstention
    seconds: float = 0.0
    dense_seconds: float = 0.0  # one dense forward pass over the pool
    row_seconds: np.ndarray | None = None  # (G',) time of each λ row (pruning + forward + loss)
    data_fingerprint: str = ""  # sha256 of the evaluated data, in order (see StreamingFingerprint)

    @property
    def lambdas(self) -> np.ndarray:
        return self.grid[: self.losses.shape[0]]

    @property
    def complete(self) -> bool:
        return self.losses.shape[0] == self.grid.shape[0]

    def save(self, path: str | Path | BinaryIO, pool_indices: np.ndarray | None = None, key: str = "") -> None:
        """Write ``losses.npz`` (lambdas, sparsity, losses, pool indices, grid, aux_*)."""
        n = self.losses.shape[1]
        np.savez_compressed(
            path,
            lambdas=self.lambdas,
            sparsity=self.sparsity,
            losses=self.losses,
            pool_indices=np.arange(n) if pool_indices is None else pool_indices,
            grid=self.grid,
            cache_key=np.array(key),
            timing=np.array([self.seconds, self.dense_seconds]),
            **{f"aux_{k}": v for k, v in self.aux.items()},
        )

    @classmethod
    def load(cls, path: str | Path, expected_key: str | None = None) -> LossTable:
        with np.load(path) as z:
            if expected_key is not None and str(z["cache_key"]) != expected_key:
                raise ValueError(f"cache key mismatch: file {z['cache_key']}, expected {expected_key}")
            aux = {k[4:]: z[k] for k in z.files if k.startswith("aux_")}
            seconds, dense = z["timing"] if "timing" in z.files else (0.0, 0.0)
            table = cls(grid=z["grid"], losses=z["losses"], sparsity=z["sparsity"], aux=aux,
                        seconds=float(seconds), dense_seconds=float(dense))
        if table.losses.shape[0] != table.sparsity.shape[0] or table.losses.shape[0] > table.grid.shape[0]:
            raise ValueError(f"{path}: inconsistent shapes")
        check_loss_table(table.losses)
        return table


def cached_loss_table(
    cache_dir: str | Path, payload: Mapping[str, Any], compute: Callable[[], LossTable]
) -> tuple[LossTable, bool]:
    """The loss table for ``payload`` (everything that determines it) from the cache, or computed
    and cached. Returns (table, from_cache). Only complete tables are cached; a corrupt entry is
    reported and recomputed."""
    key = content_key({"kind": "loss_table", **payload})

    def load(path: Path) -> LossTable:
        table = LossTable.load(path, expected_key=key)
        if not table.complete:
            raise ValueError("incomplete table")
        log.info("loaded cached loss table %s", path)
        return table

    def save(table: LossTable, tmp: str) -> None:
        with open(tmp, "wb") as fh:
            table.save(fh, key=key)

    return cached(Path(cache_dir) / "loss_tables" / f"{key}.npz", load, compute, save, "loss-table",
                  keep=lambda table: table.complete)


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _fast_layout(t: torch.Tensor) -> torch.Tensor:
    """channels_last for 4-D tensors: oneDNN convolutions run ~3x faster on CPU in that layout
    (measured on the MNIST CNN); the values are the same, only the memory order changes."""
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def _forward(model: nn.Module, weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return functional_call(model, {k: _fast_layout(v) for k, v in weights.items()}, (_fast_layout(x),))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**{k: v.detach() for k, v in model.named_parameters()}, **{k: v.detach() for k, v in model.named_buffers()}}


@torch.inference_mode()
def forward_batched(
    model: nn.Module,
    inputs: torch.Tensor,
    weights: dict[str, torch.Tensor] | None = None,
    batch_size: int = 500,
) -> list[torch.Tensor]:
    """Model outputs over ``inputs`` in batches, optionally with substituted ``weights``.

    Uses the same forward as the sweep (layout and batching), so the export check and
    verification agree with the loss table bit for bit.
    """
    model.eval()
    device = next(model.parameters()).device
    weights = _state(model) if weights is None else weights
    return [_forward(model, weights, inputs[b].to(device)) for b in _batches(inputs.shape[0], batch_size)]


Batch = tuple[torch.Tensor, torch.Tensor | None]


def as_batches(data: Any, batch_size: int = 500) -> Callable[[], Iterator[Batch]]:
    """A re-iterable source of (inputs, targets-or-None) batches, in a fixed order.

    Accepts a DataLoader (or any re-iterable of batches: tensors, (x,) or (x, y) tuples or
    lists), a tensor of inputs, or a tuple (inputs, targets).
    """
    if isinstance(data, torch.Tensor):
        data = (data, None)
    if isinstance(data, tuple) and len(data) in (1, 2) and isinstance(data[0], torch.Tensor):
        inputs = data[0]
        targets = data[1] if len(data) == 2 else None
        if targets is not None and targets.shape[0] != inputs.shape[0]:
            raise ValueError(f"inputs and targets differ in length: {inputs.shape[0]} vs {targets.shape[0]}")

        def tensors() -> Iterator[Batch]:
            for b in _batches(inputs.shape[0], batch_size):
                yield inputs[b], None if targets is None else targets[b]

        return tensors
    sampler = getattr(data, "sampler", None)
    if isinstance(sampler, torch.utils.data.RandomSampler):
        raise ValueError(
            "the calibration DataLoader shuffles (RandomSampler): certificates record point indices, "
            "so the order must be fixed; build it with shuffle=False"
        )
    if not hasattr(data, "__iter__"):
        raise TypeError(f"calibration data must be a DataLoader, a tensor or (inputs, targets); got {type(data).__name__}")

    def loader() -> Iterator[Batch]:
        for batch in data:
            if isinstance(batch, torch.Tensor):
                yield batch, None
            elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
                yield batch[0], (batch[1] if len(batch) > 1 else None)
            else:
                raise TypeError(f"batches must be tensors or (inputs, targets) tuples; got {type(batch).__name__}")

    return loader


@torch.inference_mode()
def compute_loss_table(
    model: nn.Module,
    family: PruningFamily,
    grid: np.ndarray | list[float],
    data: Any,
    loss: Loss,
    *,
    batch_size: int = 500,
    stop: StopRule | None = None,
    lambda_chunk: int = 10,
    progress: bool = True,
) -> LossTable:
    """Evaluate ``loss`` of the pruned model at every λ of ``grid`` on every point of ``data``.

    ``data``: (inputs, targets) tensors, inputs alone, or a DataLoader with a fixed order (see
    :func:`as_batches`). Data is streamed: batches are the outer loop, so memory holds one batch
    and the G × N table, never the activations of the whole set. Without ``stop`` the data is
    read once; with it, λ is processed in chunks of ``lambda_chunk`` (one pass over the data per
    chunk) and the sweep ends at the first row where ``stop`` says so. The model runs on its own
    device; the pruned weights are rebuilt from the dense ones for each λ.
    """
    grid = np.asarray(grid, dtype=np.float64)
    batches = as_batches(data, batch_size)
    model.eval()
    device = next(model.parameters()).device
    state = _state(model)
    params = {k: state[k] for k in family.ranks}
    t0 = time.perf_counter()
    chunk = grid.size if stop is None else max(1, lambda_chunk)
    rows: list[np.ndarray] = []
    aux_rows: dict[str, list[float]] = {}
    row_seconds: list[float] = []
    fp = StreamingFingerprint()
    dense_seconds = 0.0
    stopped = False
    bar = tqdm(total=grid.size, desc="λ sweep", disable=not progress, leave=False)
    for c0 in range(0, grid.size, chunk):
        lams = [float(x) for x in grid[c0 : c0 + chunk]]
        parts: list[list[torch.Tensor]] = [[] for _ in lams]
        aux_sum: list[dict[str, float]] = [{} for _ in lams]
        times = [0.0] * len(lams)
        for x, y in batches():
            x = x.to(device)
            y = None if y is None else y.to(device)
            if loss.labeled and y is None:
                raise ValueError(f"loss {loss.name!r} needs targets, but the data yields inputs only")
            t = time.perf_counter()
            dense = _forward(model, state, x)
            if c0 == 0:
                dense_seconds += time.perf_counter() - t
                fp.update(x, y)
            for i, lam in enumerate(lams):
                t = time.perf_counter()
                out = _forward(model, {**state, **family.apply(params, lam)}, x)
                values = loss(dense, out, y)
                if not isinstance(values, torch.Tensor) or values.shape != (x.shape[0],):
                    shape = getattr(values, "shape", type(values).__name__)
                    raise ValueError(
                        f"loss {loss.name!r} must return one value per sample, shape ({x.shape[0]},); got {shape}"
                    )
                parts[i].append(values.detach().float().cpu())
                if loss.aux is not None:
                    for k, v in loss.aux(dense, out, y).items():
                        aux_sum[i][k] = aux_sum[i].get(k, 0.0) + float(v.sum())
                times[i] += time.perf_counter() - t
        for i, lam in enumerate(lams):
            row = torch.cat(parts[i]).numpy()
            finite = row[np.isfinite(row)]
            if finite.size < row.size or row.min() < 0 or row.max() > 1:
                found = f"[{finite.min():g}, {finite.max():g}]" if finite.size else "no finite value"
                raise ValueError(
                    f"loss {loss.name!r} returned values outside [0, 1] (or NaN) at λ={lam:g}: "
                    f"{row.size - finite.size} non-finite, finite range {found}"
                )
            rows.append(row)
            row_seconds.append(times[i])
            for k, v in aux_sum[i].items():
                aux_rows.setdefault(k, []).append(v / row.size)
            bar.update(1)
            bar.set_postfix(risk=f"{row.mean():.4f}", refresh=False)
            if stop is not None and stop(len(rows) - 1, row):
                stopped = True
                break
        if stopped:
            break
    bar.close()
    n_rows = len(rows)
    return LossTable(
        grid=grid,
        losses=np.stack(rows),
        sparsity=np.asarray([family.sparsity(float(lam)) for lam in grid[:n_rows]]),
        aux={k: np.asarray(v) for k, v in aux_rows.items()},
        seconds=time.perf_counter() - t0,
        dense_seconds=dense_seconds,
        row_seconds=np.asarray(row_seconds),
        data_fingerprint=fp.hexdigest(),
    )
