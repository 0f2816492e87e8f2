"""Compact exports of pruned models and their loaders (all ``torch.load(weights_only=True)``).

- Structured (channel-pruned) models: :func:`save_pruned_module` writes the smaller state_dict plus
  the constructor arguments of every Conv2d / ConvTranspose2d / Linear / BatchNorm module (a
  superset of those whose shape changed; the loader replaces only those that differ from the dense
  instance). No class is pickled: a dense instance of the architecture, e.g.
  ``build_model(config)``, is the template, and :func:`load_pruned_module` rebuilds from it.
- Unstructured (masked) state_dicts: :func:`save_sparse_state` stores each tensor in the smallest
  of three exact encodings — dense; bitmask (packed bits, 1 bit per entry) + nonzero values; CSR
  over the tensor viewed as (shape[0], −1) with int32 indices — and :func:`load_sparse_state`
  restores tensors bit for bit. An entry counts as zero only when all its bytes are zero, so −0.0
  and NaN payloads survive the round trip.
- :func:`sparse_linear_plan` measures, per Linear layer and at a given batch, whether a CSR
  ``torch.sparse.mm`` beats the dense matmul, and :func:`apply_sparse_plan` swaps the winners for
  :class:`SparseLinear`.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .cache import atomic_write

PRUNED_FORMAT = "confprune.pruned_module/1"
SPARSE_FORMAT = "confprune.sparse_state/1"
_CONV_TYPES = {"Conv2d": nn.Conv2d, "ConvTranspose2d": nn.ConvTranspose2d}
_NORM_TYPES = {"BatchNorm1d": nn.BatchNorm1d, "BatchNorm2d": nn.BatchNorm2d}


# --------------------------------------------------------------------------- structured
def module_arguments(module: nn.Module) -> dict[str, Any] | None:
    """Constructor arguments that rebuild ``module`` with its current shapes, or None for a type
    that has no weight shapes to record."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        args = {
            "in_channels": module.in_channels,
            "out_channels": module.out_channels,
            "kernel_size": tuple(module.kernel_size),
            "stride": tuple(module.stride),
            "padding": module.padding if isinstance(module.padding, str) else tuple(module.padding),
            "dilation": tuple(module.dilation),
            "groups": module.groups,
            "bias": module.bias is not None,
            "padding_mode": module.padding_mode,
        }
        if isinstance(module, nn.ConvTranspose2d):
            args["output_padding"] = tuple(module.output_padding)
        return args
    if isinstance(module, nn.Linear):
        return {"in_features": module.in_features, "out_features": module.out_features, "bias": module.bias is not None}
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {
            "num_features": module.num_features,
            "eps": module.eps,
            "momentum": module.momentum,
            "affine": module.affine,
            "track_running_stats": module.track_running_stats,
        }
    return None


def _module_records(model: nn.Module) -> dict[str, dict[str, Any]]:
    out = {}
    for name, m in model.named_modules():
        args = module_arguments(m)
        if args is not None and type(m).__name__ in {*_CONV_TYPES, *_NORM_TYPES, "Linear"}:
            out[name] = {"type": type(m).__name__, "args": args}
    return out


def pruned_module_payload(module: nn.Module, base_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What :func:`save_pruned_module` writes: ``format``, ``state_dict`` (tensors), ``modules``
    ({name: {"type", "args"}} for every Conv2d, ConvTranspose2d, Linear and BatchNorm1d/2d) and
    ``base_config`` (a plain dict, e.g. the model config that builds the dense architecture, or None)."""
    return {
        "format": PRUNED_FORMAT,
        "state_dict": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "modules": _module_records(module),
        "base_config": None if base_config is None else _plain(base_config),
        "torch": str(torch.__version__),
    }


def save_pruned_module(module: nn.Module, path: str | Path, base_config: Mapping[str, Any] | None = None) -> None:
    """Write a physically pruned ``module`` as a weights_only-loadable file (atomic); see
    :func:`pruned_module_payload`."""
    _save(pruned_module_payload(module, base_config), path)


def _save(payload: Any, path: str | Path) -> None:
    """Atomic ``torch.save`` through a file handle (the archive's inner name then does not depend
    on the temp file's name: the same payload gives the same bytes)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)

    atomic_write(path, write)


def read_pruned_file(path: str | Path) -> dict[str, Any]:
    """The raw payload of a :func:`save_pruned_module` file (weights_only)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != PRUNED_FORMAT:
        raise ValueError(f"{path} is not a confprune pruned-module file ({PRUNED_FORMAT})")
    return payload


def load_pruned_module(path: str | Path, dense_model: nn.Module) -> nn.Module:
    """Rebuild the pruned module saved at ``path`` from a dense-architecture instance.

    A copy of ``dense_model`` gets every recorded module whose arguments differ replaced by a new
    one built from those arguments; the saved state_dict is then loaded with ``strict=True``.
    Returns the rebuilt module in eval mode; ``dense_model`` is untouched.
    """
    payload = read_pruned_file(path)
    model = copy.deepcopy(dense_model)
    modules = dict(model.named_modules())
    for name, record in payload["modules"].items():
        current = modules.get(name)
        if current is None or type(current).__name__ != record["type"]:
            found = None if current is None else type(current).__name__
            raise ValueError(f"{path}: module {name!r} is a {record['type']} in the file but {found} in the dense model")
        if module_arguments(current) == record["args"]:
            continue
        factory = {**_CONV_TYPES, **_NORM_TYPES, "Linear": nn.Linear}[record["type"]]
        ref = current.weight if getattr(current, "weight", None) is not None else None
        new = factory(**record["args"], **({} if ref is None else {"dtype": ref.dtype, "device": ref.device}))
        _set_submodule(model, name, new)
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval()


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _plain(obj: Any) -> Any:
    """Dicts, lists, str/int/float/bool/None only: what weights_only loading accepts."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"base_config must hold plain values; got {type(obj).__name__}")


# --------------------------------------------------------------------------- unstructured
def _nonzero_entries(t: torch.Tensor) -> torch.Tensor:
    """Boolean (numel,): entries with any nonzero byte (so −0.0 and NaN count as nonzero)."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        return flat.clone()
    return flat.view(torch.uint8).reshape(flat.numel(), flat.element_size()).ne(0).any(1)


def encode_tensor(t: torch.Tensor) -> dict[str, Any]:
    """The smallest exact encoding of ``t``: {"kind": dense|bitmask|csr, ...} (see module doc)."""
    t = t.detach().cpu().contiguous()
    numel, item = t.numel(), t.element_size()
    nz = _nonzero_entries(t)
    nnz = int(nz.sum())
    rows = t.shape[0] if t.dim() >= 1 else 1
    sizes = {
        "dense": numel * item,
        "bitmask": (numel + 7) // 8 + nnz * item,
        "csr": (rows + 1) * 4 + nnz * (4 + item) if t.dim() >= 1 and numel < 2**31 else None,
    }
    kind = min((k for k in sizes if sizes[k] is not None), key=lambda k: (sizes[k], k != "dense"))
    shape = list(t.shape)
    if kind == "dense":
        return {"kind": "dense", "values": t.clone()}
    values = t.reshape(-1)[nz].clone()
    if kind == "bitmask":
        packed = torch.from_numpy(np.packbits(nz.numpy()))
        return {"kind": "bitmask", "shape": shape, "dtype": str(t.dtype), "mask": packed, "values": values}
    nz2 = nz.reshape(rows, -1)
    counts = nz2.sum(1, dtype=torch.int64)
    crow = torch.zeros(rows + 1, dtype=torch.int32)
    crow[1:] = torch.cumsum(counts, 0).to(torch.int32)
    cols = nz2.nonzero()[:, 1].to(torch.int32)  # row-major order = the order of ``values``
    return {"kind": "csr", "shape": shape, "dtype": str(t.dtype), "crow": crow, "col": cols, "values": values}


def decode_tensor(record: Mapping[str, Any]) -> torch.Tensor:
    """Inverse of :func:`encode_tensor` (bit-exact)."""
    if record["kind"] == "dense":
        return record["values"].clone()
    shape = [int(s) for s in record["shape"]]
    numel = int(np.prod(shape)) if shape else 1
    values = record["values"]
    out = torch.zeros(numel, dtype=values.dtype)
    if record["kind"] == "bitmask":
        mask = torch.from_numpy(np.unpackbits(record["mask"].numpy(), count=numel).astype(bool))
        out[mask] = values
    elif record["kind"] == "csr":
        rows = shape[0]
        width = numel // rows if rows else 0
        counts = (record["crow"][1:] - record["crow"][:-1]).to(torch.int64)
        row_of = torch.repeat_interleave(torch.arange(rows), counts)
        out[row_of * width + record["col"].to(torch.int64)] = values
    else:
        raise ValueError(f"unknown tensor encoding {record['kind']!r}")
    return out.reshape(shape)


def encode_sparse_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The payload written by :func:`save_sparse_state` (usable in memory, e.g. to size it)."""
    return {"format": SPARSE_FORMAT, "tensors": {k: encode_tensor(v) for k, v in state.items()}}


def save_sparse_state(state: Mapping[str, torch.Tensor], path: str | Path) -> dict[str, str]:
    """Write ``state`` compactly (atomic, weights_only-loadable). Returns {name: encoding kind}."""
    payload = encode_sparse_state(state)
    _save(payload, path)
    return {k: r["kind"] for k, r in payload["tensors"].items()}


def load_sparse_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The dense state_dict saved by :func:`save_sparse_state`, tensors bit-identical."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != SPARSE_FORMAT:
        raise ValueError(f"{path} is not a confprune sparse-state file ({SPARSE_FORMAT})")
    return {k: decode_tensor(r) for k, r in payload["tensors"].items()}


# --------------------------------------------------------------------------- sparse kernels
class SparseLinear(nn.Module):
    """A Linear whose weight is stored in CSR and applied with ``torch.sparse.mm`` (inference)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and not actionable
            warnings.simplefilter("ignore", UserWarning)
            self.weight_csr = weight.detach().to_sparse_csr()
        self.bias = None if bias is None else bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        out = torch.sparse.mm(self.weight_csr, flat.t()).t()  # (B, out)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*lead, self.out_features)


def _timings(fn, repeats: int) -> tuple[float, float]:
    """(median, min) wall seconds of ``fn()`` over ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.min(times))


def sparse_linear_plan(
    model: nn.Module, state: Mapping[str, torch.Tensor], batch: Any, repeats: int = 7
) -> dict[str, dict[str, Any]]:
    """Per Linear layer of ``model`` with the (pruned) ``state``: time the dense matmul and the CSR
    matmul on that layer's real input at ``batch`` and choose the faster.

    The choice compares the fastest of ``repeats`` passes (on a shared machine the minimum is the
    estimate least inflated by waiting for a core); medians are recorded beside them.
    Returns {layer: {"kernel": "dense"|"csr", "dense_s", "csr_s" (medians), "dense_min_s",
    "csr_min_s", "density", "batch_rows"}}.
    """
    work = copy.deepcopy(model).eval()
    work.load_state_dict(dict(state), strict=True)
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda mod, inp, out, n=n: inputs.__setitem__(n, inp[0].detach()))
        for n, m in work.named_modules() if isinstance(m, nn.Linear)
    ]
    try:
        with torch.inference_mode():
            work(*(batch if isinstance(batch, (tuple, list)) else (batch,)))
    finally:
        for h in handles:
            h.remove()
    modules = dict(work.named_modules())
    plan: dict[str, dict[str, Any]] = {}
    with torch.inference_mode():
        for name, x in inputs.items():
            dense = modules[name]
            sparse = SparseLinear(dense.weight, dense.bias)
            dense_med, dense_min = _timings(lambda d=dense, x=x: d(x), repeats)
            csr_med, csr_min = _timings(lambda s=sparse, x=x: s(x), repeats)
            plan[name] = {
                "kernel": "csr" if csr_min < dense_min else "dense",
                "dense_s": dense_med,
                "csr_s": csr_med,
                "dense_min_s": dense_min,
                "csr_min_s": csr_min,
                "density": float(torch.count_nonzero(dense.weight)) / dense.weight.numel(),
                "batch_rows": int(x.numel() // x.shape[-1]),
            }
    return plan


def apply_sparse_plan(model: nn.Module, state: Mapping[str, torch.Tensor], plan: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """A copy of ``model`` with ``state`` loaded and the plan's ``csr`` layers as SparseLinear
    (eval mode; for inference only — the CSR weight is not a trainable parameter)."""
    work = copy.deepcopy(model).eval()
    work.load_state_dict(dict(state), strict=True)
    for name, decision in plan.items():
        if decision["kernel"] == "csr":
            layer = work.get_submodule(name)
            _set_submodule(work, name, SparseLinear(layer.weight, layer.bias))
    return work


__all__ = [
    "PRUNED_FORMAT", "SPARSE_FORMAT", "SparseLinear", "apply_sparse_plan", "decode_tensor",
    "encode_sparse_state", "encode_tensor", "load_pruned_module", "load_sparse_state",
    "module_arguments", "read_pruned_file", "save_pruned_module", "save_sparse_state",
    "sparse_linear_plan",
]
