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
from tqdm.auto import tqdm

from .cache import cached
from .forward import as_batches, forward, model_state
from .integrity import StreamingFingerprint, content_key
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
    batch_size: int = 0  # the batches the data was evaluated in (a verifier recomputes in the same ones)

    @property
    def lambdas(self) -> np.ndarray:
        return self.grid[: self.losses.shape[0]]

    @property
    def complete(self) -> bool:
        return self.losses.shape[0] == self.grid.shape[0]

    def save(self, path: str | Path | BinaryIO, pool_indices: np.ndarray | None = None, key: str = "") -> None:
        """Write ``losses.npz`` (lambdas, sparsity, losses, pool indices, grid, aux_*); a path is
        written atomically."""
        if isinstance(path, (str, Path)):
            from .cache import atomic_write

            def write(tmp: str) -> None:
                with open(tmp, "wb") as fh:
                    self.save(fh, pool_indices, key)

            atomic_write(path, write)
            return
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
            data_fingerprint=np.array(self.data_fingerprint),
            batch_size=np.array(self.batch_size),
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
                        seconds=float(seconds), dense_seconds=float(dense),
                        data_fingerprint=str(z["data_fingerprint"]) if "data_fingerprint" in z.files else "",
                        batch_size=int(z["batch_size"]) if "batch_size" in z.files else 0)
        if table.losses.shape[0] != table.sparsity.shape[0] or table.losses.shape[0] > table.grid.shape[0]:
            raise ValueError(f"{path}: inconsistent shapes")
        check_loss_table(table.losses)
        return table


def check_outputs(out: Any, what: str, batch: int) -> torch.Tensor:
    """Model outputs must be a finite tensor: NaN or infinite outputs would make every loss
    comparison false (a model of NaNs "agrees" with itself nowhere and everywhere), so they are an
    error naming the model, the λ and the batch, never a certificate."""
    if isinstance(out, Mapping):
        raise TypeError(
            f"{what} returned a {type(out).__name__} with keys {list(out)[:5]}, not a tensor: confprune's losses "
            "compare output tensors (logits); wrap the model so that it returns one, e.g. "
            "nn.Sequential(model, ...) or a module whose forward returns model(x)['logits']"
        )
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{what} returned {type(out).__name__}, not a tensor of outputs")
    if not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).any(dim=tuple(range(1, out.dim())) if out.dim() > 1 else 0).sum())
        raise ValueError(f"{what} produced non-finite outputs (NaN or inf) for {bad} of {out.shape[0]} points in batch "
                         f"{batch}: a model with non-finite outputs cannot be certified")
    return out


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
    state = model_state(model)
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
        for b, (x, y) in enumerate(batches()):
            x = x.to(device)
            y = None if y is None else y.to(device)
            if loss.labeled and y is None:
                raise ValueError(f"loss {loss.name!r} needs targets, but the data yields inputs only")
            t = time.perf_counter()
            try:
                dense = check_outputs(forward(model, state, x), "the dense model", b)
            except RuntimeError as err:
                raise ValueError(
                    f"the model fails on batch {b} of the data (inputs {x.dtype}, shape {tuple(x.shape)}): "
                    f"{str(err).strip().splitlines()[0]}. Pass inputs the model takes (e.g. x.float() for "
                    "floating-point weights)"
                ) from None
            if c0 == 0:
                dense_seconds += time.perf_counter() - t
                fp.update(x, y)
            for i, lam in enumerate(lams):
                t = time.perf_counter()
                out = check_outputs(forward(model, {**state, **family.apply(params, lam)}, x), f"the model pruned at λ={lam:g}", b)
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
        batch_size=batch_size,
    )
