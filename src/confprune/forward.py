"""Forward passes: the one path every evaluation of a (pruned) model goes through.

A model is evaluated as a *fast copy* (:func:`fast_copy`: a detached eval-mode copy whose 4-D
weights and inputs use the channels_last layout, where oneDNN convolutions run fastest on CPU);
pruned weights are copied into it in place (:func:`load_weights`), so no module is rebuilt and
no weight is converted again per batch. The sweep, the dense metrics, verification and the
figures all go through this path with the same batching, so their outputs agree bit for bit.
:func:`as_batches` turns what users pass as data (tensors, NumPy arrays, a fixed-order
DataLoader) into one re-iterable stream of ``(inputs, targets-or-None)`` batches.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import OptionError

# Part of the cache key of everything computed from forward outputs (loss tables, dense metrics,
# latencies): bumped whenever the layout, and with it the kernels and their float rounding, change.
# 2: explicit channels_last strides for size-1 dimensions (see fast_layout).
LAYOUT_VERSION = 2


def tune_allocator(mmap_threshold: int = 256 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Keep glibc from handing every large activation buffer back to the OS.

    By default glibc serves a block above a dynamic threshold (128 KiB, growing to at most 32 MiB)
    with its own ``mmap`` and ``munmap``s it when freed; a CNN's activations (25 MB for the MNIST
    CNN's first conv at batch 500) then cost fresh zeroed pages on every layer of every batch. On
    the 2-core benchmark machine that made the same dense pass take 0.35–1.1 s from one repeat to
    the next; with the thresholds raised it takes 0.35–0.46 s at every batch size, with a lower
    peak RSS (benchmarks/README.md). Process-wide and not reversible, so the runner calls it (its
    process is ours) and library users opt in. ``CONFPRUNE_TUNE_MALLOC=0`` turns it off.

    Returns whether the thresholds were set (False off glibc, e.g. macOS or musl).
    """
    import ctypes
    import os

    if os.environ.get("CONFPRUNE_TUNE_MALLOC", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, int(mmap_threshold)) == 1
                and mallopt(m_trim_threshold, int(trim_threshold)) == 1)


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def fast_layout(t: torch.Tensor) -> torch.Tensor:
    """channels_last for 4-D tensors: oneDNN convolutions run ~3x faster on CPU in that layout
    (measured on the MNIST CNN); the values are the same, only the memory order changes.

    Always a fresh tensor with the channels_last strides of ``torch.empty_like``: for a tensor
    with a size-1 dimension (the first conv's weight, 16×1×3×3) ``t.contiguous(channels_last)``
    returns ``t`` unchanged, with NCHW strides that also count as contiguous, and the convolution
    then picks the NCHW kernel and converts its channels_last input on every batch (2.7× slower
    over the MNIST CNN's pool; what ``nn.Module.to(memory_format=...)`` gives is this layout)."""
    if t.dim() != 4:
        return t
    out = torch.empty_like(t, memory_format=torch.channels_last)
    out.copy_(t)
    return out


def fast_copy(model: nn.Module) -> nn.Module:
    """A detached, eval-mode copy of ``model`` with its 4-D parameters and buffers in channels_last
    (the model itself is untouched)."""
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        if p.is_leaf:  # a deep-copied TorchScript module's parameters are not leaves (and never trained here)
            p.requires_grad_(False)
    return to_fast_layout(net)


def to_fast_layout(net: nn.Module) -> nn.Module:
    """Put ``net``'s 4-D parameters and buffers in the layout :func:`fast_layout` gives (in place;
    exactly that layout, strides included, so that every path runs the same kernels)."""
    with torch.no_grad():
        for t in [*net.parameters(), *net.buffers()]:
            if t.dim() == 4:
                t.data = fast_layout(t.data)
    net._confprune_fast = True  # type: ignore[attr-defined]  (the sweep converts no further)
    return net


def load_weights(net: nn.Module, weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy ``weights`` (name → tensor) into ``net``'s parameters and buffers in place; each keeps
    its layout (values are equal; only memory order may differ)."""
    own = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    with torch.no_grad():
        for name, value in weights.items():
            own[name].copy_(value)
    return net


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**{k: v.detach() for k, v in model.named_parameters()}, **{k: v.detach() for k, v in model.named_buffers()}}


@torch.inference_mode()
def forward_batched(
    model: nn.Module,
    inputs: torch.Tensor,
    weights: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = 500,
) -> list[torch.Tensor]:
    """Model outputs over ``inputs`` in batches, optionally with substituted ``weights`` (name →
    tensor, e.g. a pruning family's ``apply``), through the sweep's path (:func:`fast_copy`, the
    same layout and batching), so that its outputs equal the loss table's bit for bit."""
    net = fast_copy(model)
    if weights is not None:
        load_weights(net, weights)
    device = next(net.parameters()).device
    return [net(fast_layout(inputs[b].to(device))) for b in _batches(inputs.shape[0], batch_size)]


Batch = tuple[torch.Tensor, torch.Tensor | None]


class BatchSource:
    """A re-iterable stream of batches: calling it starts a pass. ``in_memory``: the data are
    tensors already in memory (the sweep then takes the fastest loop order); ``n_batches``: the
    number of batches per pass, when known."""

    def __init__(self, iterate: Callable[[], Iterator[Batch]], in_memory: bool, n_batches: int | None) -> None:
        self.iterate, self.in_memory, self.n_batches = iterate, in_memory, n_batches

    def __call__(self) -> Iterator[Batch]:
        return self.iterate()


def _as_tensor(a: Any, what: str) -> Any:
    """NumPy arrays become tensors (float64 → float32, as models expect); tensors pass as they are."""
    if isinstance(a, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.float() if t.dtype == torch.float64 else t
    if a is not None and not isinstance(a, torch.Tensor):
        raise OptionError(what, type(a).__name__, "a torch tensor or a NumPy array")
    return a


def _order_is_fixed(loader: Any) -> bool:
    """True when iterating the loader twice yields the same order of points (no shuffling)."""
    sampler = getattr(loader, "batch_sampler", None) or getattr(loader, "sampler", None)
    if sampler is None:
        return True
    if isinstance(sampler, torch.utils.data.BatchSampler):
        sampler = sampler.sampler
    if isinstance(sampler, torch.utils.data.SequentialSampler):
        return True
    try:
        return list(iter(sampler)) == list(iter(sampler))
    except TypeError:  # a sampler without a length-bounded iteration: cannot be checked cheaply
        return True


def as_batches(data: Any, batch_size: int = 500) -> BatchSource:
    """A re-iterable source of (inputs, targets-or-None) batches, in a fixed order.

    Accepts a DataLoader (or any re-iterable of batches: tensors, (x,) or (x, y) tuples or
    lists), a tensor of inputs, or a tuple (inputs, targets) of tensors or NumPy arrays. Refused,
    with a message naming what is wrong: an empty data set, ``batch_size`` < 1, a loader whose
    order changes between passes (any shuffling sampler: certificates record point indices).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError("batch_size", batch_size, "an integer ≥ 1")
    if isinstance(data, (torch.Tensor, np.ndarray)):
        data = (data, None)
    if isinstance(data, tuple) and len(data) in (1, 2) and isinstance(data[0], (torch.Tensor, np.ndarray)):
        inputs = _as_tensor(data[0], "calibration inputs")
        targets = _as_tensor(data[1], "calibration targets") if len(data) == 2 else None
        if inputs.dim() == 0 or inputs.shape[0] == 0:
            raise OptionError("calibration_data", f"{tuple(inputs.shape)} inputs", "at least one data point")
        if targets is not None and targets.shape[0] != inputs.shape[0]:
            raise OptionError("calibration_data", f"{inputs.shape[0]} inputs, {targets.shape[0]} targets",
                              "as many targets as inputs")

        slices = _batches(inputs.shape[0], batch_size)

        def tensors() -> Iterator[Batch]:
            for b in slices:
                yield inputs[b], None if targets is None else targets[b]

        return BatchSource(tensors, in_memory=True, n_batches=len(slices))
    if not hasattr(data, "__iter__"):
        raise OptionError("calibration_data", type(data).__name__,
                          "a DataLoader with a fixed order, a tensor or NumPy array, or (inputs, targets)")
    if iter(data) is data:  # a generator or other one-shot iterator: a second pass would see less data
        raise OptionError("calibration_data", f"a one-shot {type(data).__name__}",
                          "data that can be read more than once (certification reads it several times): a list of "
                          "batches (list(...) of it), a DataLoader with a fixed order, or (inputs, targets) tensors")
    if not _order_is_fixed(data):
        raise OptionError(
            "calibration_data", f"a DataLoader with {type(getattr(data, 'sampler', data)).__name__}",
            "a fixed order (shuffle=False): certificates record point indices, and this loader's order changes "
            "from pass to pass",
        )

    def loader() -> Iterator[Batch]:
        empty = True
        for batch in data:
            if isinstance(batch, (torch.Tensor, np.ndarray)):
                x, y = _as_tensor(batch, "calibration inputs"), None
            elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], (torch.Tensor, np.ndarray)):
                x = _as_tensor(batch[0], "calibration inputs")
                y = _as_tensor(batch[1], "calibration targets") if len(batch) > 1 else None
            else:
                raise OptionError("calibration_data", f"batches of type {type(batch).__name__}",
                                  "batches that are tensors or (inputs, targets) tuples")
            empty = False
            yield x, y
        if empty:
            raise OptionError("calibration_data", "a loader that yields no batch", "at least one data point")

    try:
        n_batches: int | None = len(data)
    except TypeError:
        n_batches = None
    return BatchSource(loader, in_memory=False, n_batches=n_batches)
