"""The λ sweep: the per-sample loss table L (G × N) over the evaluation pool, computed once.

Dense outputs are computed once; for each λ the pruned weights are built from the dense ones
(never cumulatively) and passed to ``torch.func.functional_call``, so the module is never copied
or modified. An optional ``stop`` rule ends the sweep early (fixed-sequence testing has stopped
for every split, so later rows cannot change any result).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from .cache import atomic_write, content_key, locked
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
    path = Path(cache_dir) / "loss_tables" / f"{key}.npz"
    with locked(path):
        if path.exists():
            try:
                table = LossTable.load(path, expected_key=key)
                if table.complete:
                    log.info("loaded cached loss table %s", path)
                    return table, True
            except Exception as err:  # any defect: report and recompute, never trust
                log.warning("loss-table cache entry %s is corrupt or mismatched (%s); recomputing", path, err)
        table = compute()
        if table.complete:

            def write(tmp: str) -> None:
                with open(tmp, "wb") as fh:
                    table.save(fh, key=key)

            atomic_write(path, write)
        return table, False


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _fast_layout(t: torch.Tensor) -> torch.Tensor:
    """channels_last for 4-D tensors: oneDNN convolutions run ~3x faster on CPU in that layout
    (measured on the MNIST CNN); the values are the same, only the memory order changes."""
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


@torch.inference_mode()
def forward_batched(
    model: nn.Module,
    inputs: torch.Tensor,
    weights: dict[str, torch.Tensor] | None = None,
    batch_size: int = 500,
) -> list[torch.Tensor]:
    """Model outputs over ``inputs`` in batches, optionally with substituted ``weights``.

    The single forward path of the project: the sweep, the dense outputs and the export check
    all go through it, so they agree bit for bit.
    """
    model.eval()
    device = next(model.parameters()).device
    if weights is None:
        weights = {k: v.detach() for k, v in model.named_parameters()}
        weights.update({k: v.detach() for k, v in model.named_buffers()})
    weights = {k: _fast_layout(v) for k, v in weights.items()}
    outs = []
    for b in _batches(inputs.shape[0], batch_size):
        x = _fast_layout(inputs[b].to(device))
        outs.append(functional_call(model, weights, (x,)))
    return outs


@torch.inference_mode()
def compute_loss_table(
    model: nn.Module,
    family: PruningFamily,
    grid: np.ndarray | list[float],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: Loss,
    *,
    batch_size: int = 500,
    stop: StopRule | None = None,
    progress: bool = True,
) -> LossTable:
    """Evaluate ``loss`` of the pruned model at every λ of ``grid`` on every pool point.

    Inputs and targets may live on any device; the model's device is used.
    """
    grid = np.asarray(grid, dtype=np.float64)
    model.eval()
    device = next(model.parameters()).device
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    n = inputs.shape[0]
    batches = _batches(n, batch_size)
    t0 = time.perf_counter()
    dense_out = forward_batched(model, inputs, {**params, **buffers}, batch_size)
    dense_seconds = time.perf_counter() - t0
    rows: list[np.ndarray] = []
    aux_rows: dict[str, list[float]] = {}
    sparsity: list[float] = []
    bar = tqdm(grid, desc="λ sweep", disable=not progress, leave=False)
    row_seconds: list[float] = []
    for j, lam in enumerate(bar):
        t_row = time.perf_counter()
        weights = {**family.apply(params, float(lam)), **buffers}
        outs = forward_batched(model, inputs, weights, batch_size)
        row = torch.empty(n, dtype=torch.float32)
        aux_sum: dict[str, float] = {}
        for b, dense, out in zip(batches, dense_out, outs, strict=True):
            y = targets[b].to(device)
            row[b] = loss(dense, out, y).float().cpu()
            if loss.aux is not None:
                for k, v in loss.aux(dense, out, y).items():
                    aux_sum[k] = aux_sum.get(k, 0.0) + float(v.sum())
        row_np = row.numpy()
        if not np.all(np.isfinite(row_np)) or row_np.min() < 0 or row_np.max() > 1:
            raise ValueError(
                f"loss {loss.name!r} returned values outside [0, 1] (or NaN) at λ={lam:g}: "
                f"range [{np.nanmin(row_np):g}, {np.nanmax(row_np):g}]"
            )
        rows.append(row_np)
        row_seconds.append(time.perf_counter() - t_row)
        sparsity.append(family.sparsity(float(lam)))
        for k, v in aux_sum.items():
            aux_rows.setdefault(k, []).append(v / n)
        bar.set_postfix(risk=f"{row_np.mean():.4f}", refresh=False)
        if stop is not None and stop(j, row_np):
            break
    return LossTable(
        grid=grid,
        losses=np.stack(rows),
        sparsity=np.asarray(sparsity),
        aux={k: np.asarray(v) for k, v in aux_rows.items()},
        seconds=time.perf_counter() - t0,
        dense_seconds=dense_seconds,
        row_seconds=np.asarray(row_seconds),
    )
