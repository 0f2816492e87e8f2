"""The λ sweep: the per-sample loss table L (G × N) over the evaluation pool, computed once.

Dense outputs are computed once; for each λ the pruned model is the dense model's fast copy
with that λ's weights copied in place (built from the dense weights, never cumulatively; the
model itself is never modified). Several losses come out of one pass of the network. An
optional ``stop`` rule ends the sweep early (fixed-sequence testing has stopped for every
split, so later rows cannot change any result). See :func:`compute_loss_tables` for the loop
orders.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .cache import atomic_write, cached, seal
from .forward import LAYOUT_VERSION, BatchSource, as_batches, fast_copy, fast_layout, to_fast_layout
from .integrity import StreamingFingerprint, content_key
from .losses import Loss
from .pruning import PruningFamily
from .stats import check_loss_table

log = logging.getLogger(__name__)

StopRule = Callable[[int, np.ndarray], bool]
# Part of every loss-table cache key: 2 = tables carry the dense model's own losses (dense_losses),
# so a table cached before that is never served where the accuracy drop needs its dense row.
TABLE_FORMAT = 2


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
    # (N,) the loss of the dense model itself (the unpruned module, not a family member): the
    # reference of the accuracy drop whatever the grid's first point or the family (an int8
    # family's λ = 0 member is not the dense model). None for tables saved before it was recorded.
    dense_losses: np.ndarray | None = None

    @property
    def dense_risk(self) -> float:
        """The dense model's mean loss on the evaluated data (the λ = 0 row for older tables that
        lack the dense row and whose grid starts at 0; NaN otherwise)."""
        if self.dense_losses is not None:
            return float(np.mean(self.dense_losses, dtype=np.float64))
        return float(self.losses[0].mean(dtype=np.float64)) if self.grid[0] == 0 else float("nan")

    @property
    def lambdas(self) -> np.ndarray:
        return self.grid[: self.losses.shape[0]]

    @property
    def complete(self) -> bool:
        return self.losses.shape[0] == self.grid.shape[0]

    def save(self, path: str | Path | BinaryIO, pool_indices: np.ndarray | None = None, key: str = "",
             timing: bool = True) -> None:
        """Write ``losses.npz`` (lambdas, sparsity, losses, pool indices, grid, aux_*); a path is
        written atomically. ``timing=False`` leaves out the measured seconds, so that the same
        table gives the same bytes on every run (a run's ``losses.npz``)."""
        if isinstance(path, (str, Path)):
            from .cache import atomic_write

            def write(tmp: str) -> None:
                with open(tmp, "wb") as fh:
                    self.save(fh, pool_indices, key, timing)

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
            **({"timing": np.array([self.seconds, self.dense_seconds])} if timing else {}),
            data_fingerprint=np.array(self.data_fingerprint),
            batch_size=np.array(self.batch_size),
            **({} if self.dense_losses is None else {"dense_losses": self.dense_losses}),
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
                        batch_size=int(z["batch_size"]) if "batch_size" in z.files else 0,
                        dense_losses=z["dense_losses"] if "dense_losses" in z.files else None)
        if table.losses.shape[0] != table.sparsity.shape[0] or table.losses.shape[0] > table.grid.shape[0]:
            raise ValueError(f"{path}: inconsistent shapes")
        if table.dense_losses is not None and table.dense_losses.shape != table.losses.shape[1:]:
            raise ValueError(f"{path}: the dense row has shape {table.dense_losses.shape}, the table {table.losses.shape}")
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


def loss_table_payload(model_checksum: str, pool_fingerprint: str, loss: Loss, family_config: Mapping[str, Any],
                       grid: Sequence[float], device: str) -> dict[str, Any]:
    """Everything that determines a loss table, the cache key's content (with the layout and
    table format :func:`cached_loss_tables` adds): the weights, the pool, the loss and its options,
    the family's spec and what families compute (``FAMILY_FORMAT``), the grid, the device type."""
    from .pruning import FAMILY_FORMAT

    return {"model_checksum": model_checksum, "pool": pool_fingerprint, "loss": {"name": loss.name, **loss.params},
            "pruning": dict(family_config), "family_format": FAMILY_FORMAT, "grid": [float(x) for x in grid],
            "device": device}


def cached_loss_tables(
    cache_dir: str | Path, payloads: Sequence[Mapping[str, Any]], compute: Callable[[list[int]], list[LossTable]]
) -> tuple[LossTable, bool]:
    """The loss table of ``payloads[0]`` (everything that determines it) from the cache, or
    computed — together with the tables of the other payloads that are not cached yet, in the
    same pass of the network (``compute(indices)`` returns their tables in that order) — and
    cached, each under its own key. Returns (table, from_cache). Only complete tables are cached;
    a corrupt entry is reported and recomputed."""
    keys = [content_key({"kind": "loss_table", "layout": LAYOUT_VERSION, "format": TABLE_FORMAT, **p}) for p in payloads]
    paths = [Path(cache_dir) / "loss_tables" / f"{k}.npz" for k in keys]

    def load(path: Path) -> LossTable:
        table = LossTable.load(path, expected_key=keys[0])
        if not table.complete:
            raise ValueError("incomplete table")
        log.info("loaded cached loss table %s", path)
        return table

    def save(table: LossTable, tmp: str, key: str) -> None:
        with open(tmp, "wb") as fh:
            table.save(fh, key=key)

    def compute_all() -> LossTable:
        wanted = [0, *(i for i in range(1, len(paths)) if not paths[i].exists())]
        tables = compute(wanted)
        for i, table in zip(wanted[1:], tables[1:], strict=True):  # the companions, written atomically
            if table.complete:
                try:
                    atomic_write(paths[i], lambda tmp, t=table, k=keys[i]: save(t, tmp, k))
                    seal(paths[i])
                except OSError as err:
                    log.warning("could not cache the loss table at %s (%s)", paths[i], err.strerror or err)
        return tables[0]

    return cached(paths[0], load, compute_all, lambda table, tmp: save(table, tmp, keys[0]), "loss-table",
                  keep=lambda table: table.complete)


class _Rows:
    """The rows of one loss table as they are finished: checks, aux statistics, timing."""

    def __init__(self, loss: Loss) -> None:
        self.loss = loss
        self.rows: list[np.ndarray] = []
        self.aux: dict[str, list[float]] = {}
        self.seconds: list[float] = []

    def add(self, lam: float, parts: list[torch.Tensor], aux: dict[str, float], seconds: float) -> np.ndarray:
        row = torch.cat(parts).numpy()
        finite = row[np.isfinite(row)]
        if finite.size < row.size or row.min() < 0 or row.max() > 1:
            found = f"[{finite.min():g}, {finite.max():g}]" if finite.size else "no finite value"
            raise ValueError(
                f"loss {self.loss.name!r} returned values outside [0, 1] (or NaN) at λ={lam:g}: "
                f"{row.size - finite.size} non-finite, finite range {found}"
            )
        self.rows.append(row)
        self.seconds.append(seconds)
        for k, v in aux.items():
            self.aux.setdefault(k, []).append(v / row.size)
        return row


def _losses_of(loss: Loss, dense: torch.Tensor, out: torch.Tensor, y: torch.Tensor | None,
               aux: dict[str, float]) -> torch.Tensor:
    values = loss(dense, out, y)
    if not isinstance(values, torch.Tensor) or values.shape != (out.shape[0],):
        shape = getattr(values, "shape", type(values).__name__)
        raise ValueError(f"loss {loss.name!r} must return one value per sample, shape ({out.shape[0]},); got {shape}")
    if loss.aux is not None:
        for k, v in loss.aux(dense, out, y).items():
            aux[k] = aux.get(k, 0.0) + float(v.sum())
    return values.detach().float().cpu()


def _dense_outputs(net: nn.Module, x: torch.Tensor, b: int) -> torch.Tensor:
    try:
        return check_outputs(net(x), "the dense model", b)
    except RuntimeError as err:
        raise ValueError(
            f"the model fails on batch {b} of the data (inputs {x.dtype}, shape {tuple(x.shape)}): "
            f"{str(err).strip().splitlines()[0]}. Pass inputs the model takes (e.g. x.float() for "
            "floating-point weights)"
        ) from None


@torch.inference_mode()
def compute_loss_tables(
    model: nn.Module,
    family: PruningFamily,
    grid: np.ndarray | list[float],
    data: Any,
    losses: Sequence[Loss],
    *,
    batch_size: int = 500,
    stop: StopRule | None = None,
    lambda_chunk: int = 10,
    progress: bool = True,
) -> list[LossTable]:
    """Evaluate every loss of ``losses`` on the model pruned at every λ of ``grid`` and every
    point of ``data``, in one pass of the network: one (G × N) table per loss.

    ``data``: (inputs, targets) tensors or NumPy arrays, inputs alone, or a DataLoader with a
    fixed order (see :func:`~confprune.forward.as_batches`). The loop order follows the data:

    - in memory: λ is the outer loop. The pruned model at each λ is one fast copy of the model
      with that λ's weights copied in place (channels_last, built from the dense weights, never
      cumulatively); the dense outputs are computed once. Memory: the pool, its dense outputs,
      one model copy and the tables.
    - streamed (a DataLoader): λ in chunks of ``lambda_chunk``, one pass over the data per chunk
      with that many pruned copies; memory holds one batch, the chunk's copies and the tables.

    Both orders give bit-identical tables (the same batches through the same kernels). ``stop``
    (checked on the first loss's rows, in order) ends the sweep at the first row where it says so.
    """
    grid = np.asarray(grid, dtype=np.float64)
    losses = list(losses)
    source = as_batches(data, batch_size)
    if any(loss.labeled for loss in losses) and not _has_targets(source):
        name = next(loss.name for loss in losses if loss.labeled)
        raise ValueError(f"loss {name!r} needs targets, but the data yields inputs only")
    model.eval()
    sweep = _Sweep(model, family, grid, losses, stop, next(model.parameters()).device, fast_copy(model),
                   bar=tqdm(total=grid.size, desc="λ sweep", unit="λ", disable=not progress, leave=False))
    t0 = time.perf_counter()
    if source.in_memory:
        dense_seconds = _sweep_in_memory(sweep, source)
    else:
        dense_seconds = _sweep_streamed(sweep, source, max(1, int(lambda_chunk)))
    sweep.bar.close()
    seconds = time.perf_counter() - t0
    n_rows = len(sweep.tables[0].rows)
    sparsity = np.asarray([family.sparsity(float(lam)) for lam in grid[:n_rows]])
    return [
        LossTable(grid=grid, losses=np.stack(tab.rows), sparsity=sparsity,
                  aux={k: np.asarray(v) for k, v in tab.aux.items()}, seconds=seconds, dense_seconds=dense_seconds,
                  row_seconds=np.asarray(tab.seconds), data_fingerprint=sweep.fp.hexdigest(), batch_size=batch_size,
                  dense_losses=_dense_row(tab.loss, sweep.dense_parts[i]))
        for i, tab in enumerate(sweep.tables)
    ]


@dataclass
class _Sweep:
    """What both loop orders of :func:`compute_loss_tables` share: inputs, rows built, progress."""

    model: nn.Module
    family: PruningFamily
    grid: np.ndarray
    losses: list[Loss]
    stop: StopRule | None
    device: torch.device
    dense_net: nn.Module
    bar: Any
    tables: list[_Rows] = field(default_factory=list)
    dense_parts: list[list[torch.Tensor]] = field(default_factory=list)  # each loss of the dense model itself
    fp: StreamingFingerprint = field(default_factory=StreamingFingerprint)

    def __post_init__(self) -> None:
        self.tables = [_Rows(loss) for loss in self.losses]
        self.dense_parts = [[] for _ in self.losses]

    def record_dense(self, x: torch.Tensor, y: torch.Tensor | None, out: torch.Tensor) -> None:
        """A batch's part of the data's fingerprint and of the dense model's own losses."""
        self.fp.update(x, y)
        for i, loss in enumerate(self.losses):
            self.dense_parts[i].append(_losses_of(loss, out, out, y, {}))

    def pruned_batch(self, net: nn.Module, lam: float, x: torch.Tensor, y: torch.Tensor | None, dense: torch.Tensor,
                     b: int, parts: list[list[torch.Tensor]], aux: list[dict[str, float]]) -> None:
        out = check_outputs(net(x), f"the model pruned at λ={lam:g}", b)
        for i, loss in enumerate(self.losses):
            parts[i].append(_losses_of(loss, dense, out, y, aux[i]))

    def finish_row(self, j: int, lam: float, parts: list[list[torch.Tensor]], aux: list[dict[str, float]],
                   seconds: float) -> bool:
        """Add row ``j`` to every table; True when the stop rule ends the sweep here."""
        rows = [tab.add(lam, parts[i], aux[i], seconds) for i, tab in enumerate(self.tables)]
        self.bar.set_postfix(risk=f"{rows[0].mean():.4f}", refresh=False)
        return self.stop is not None and bool(self.stop(j, rows[0]))


def _sweep_in_memory(sweep: _Sweep, source: BatchSource) -> float:
    """λ outer: one model copy whose weights are replaced in place per λ; dense outputs once.
    Returns the seconds of the dense pass."""
    batches = [(fast_layout(x.to(sweep.device)), None if y is None else y.to(sweep.device)) for x, y in source()]
    t = time.perf_counter()
    dense = [_dense_outputs(sweep.dense_net, x, b) for b, (x, _) in enumerate(batches)]
    dense_seconds = time.perf_counter() - t
    for (x, y), out in zip(batches, dense, strict=True):
        sweep.record_dense(x, y, out)
    net = None
    for j, lam in enumerate(sweep.grid.tolist()):
        t = time.perf_counter()
        net = _as_fast(sweep.family.pruned_model(sweep.model, lam, net))
        parts: list[list[torch.Tensor]] = [[] for _ in sweep.losses]
        aux: list[dict[str, float]] = [{} for _ in sweep.losses]
        for b, (x, y) in enumerate(batches):
            sweep.pruned_batch(net, lam, x, y, dense[b], b, parts, aux)
        sweep.bar.update(1)
        if sweep.finish_row(j, lam, parts, aux, time.perf_counter() - t):
            break
    return dense_seconds


def _sweep_streamed(sweep: _Sweep, source: BatchSource, chunk: int) -> float:
    """λ in chunks, one pass over the data per chunk with that many pruned copies. Returns the
    seconds of the dense pass (timed on the first chunk's pass)."""
    dense_seconds = 0.0
    for c0 in range(0, sweep.grid.size, chunk):
        lams = sweep.grid[c0 : c0 + chunk].tolist()
        nets = [_as_fast(sweep.family.pruned_model(sweep.model, lam)) for lam in lams]
        parts = [[[] for _ in sweep.losses] for _ in lams]
        aux = [[{} for _ in sweep.losses] for _ in lams]
        times = [0.0] * len(lams)
        for b, (x, y) in enumerate(source()):
            x, y = fast_layout(x.to(sweep.device)), None if y is None else y.to(sweep.device)
            t = time.perf_counter()
            dense_b = _dense_outputs(sweep.dense_net, x, b)
            if c0 == 0:
                dense_seconds += time.perf_counter() - t
                sweep.record_dense(x, y, dense_b)
            for k, (lam, net) in enumerate(zip(lams, nets, strict=True)):
                t = time.perf_counter()
                sweep.pruned_batch(net, lam, x, y, dense_b, b, parts[k], aux[k])
                times[k] += time.perf_counter() - t
            if source.n_batches:  # the bar moves with the data, not only at the chunk's end (set, not
                # summed: fractions summed in floating point overshot the total, 100.00000000000007/100)
                sweep.bar.n = min(c0 + len(lams), round(c0 + len(lams) * (b + 1) / source.n_batches, 6))
                sweep.bar.update(0)
        for k, lam in enumerate(lams):
            # With a known length the bar stands at the chunk's end now, else it moves per row.
            sweep.bar.n = c0 + (len(lams) if source.n_batches else k + 1)
            sweep.bar.update(0)
            if sweep.finish_row(c0 + k, lam, parts[k], aux[k], times[k]):
                return dense_seconds
    return dense_seconds


def _dense_row(loss: Loss, parts: list[torch.Tensor]) -> np.ndarray:
    """The dense model's own losses (N,), checked like every row of the table."""
    row = torch.cat(parts).numpy()
    if not np.all(np.isfinite(row)) or row.min() < 0 or row.max() > 1:
        raise ValueError(f"loss {loss.name!r} returned values outside [0, 1] (or NaN) on the dense model itself")
    return row


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
    """The loss table of one loss: see :func:`compute_loss_tables`."""
    return compute_loss_tables(model, family, grid, data, [loss], batch_size=batch_size, stop=stop,
                               lambda_chunk=lambda_chunk, progress=progress)[0]


def _as_fast(net: nn.Module) -> nn.Module:
    """Families that build a new module per λ (the channel family) get the fast layout too."""
    return net if getattr(net, "_confprune_fast", False) else to_fast_layout(net)


def _has_targets(source: BatchSource) -> bool:
    for _, y in source():
        return y is not None
    return False
