"""Cost accounting of a (pruned) model: parameters, multiply-accumulates, bytes and latency.

Conventions (ours, those of fvcore/thop):
- A MAC is one multiply-add of a weight with an input. Bias additions, BatchNorm, activations and
  pooling are not counted (they are O(activations), not O(weights)).
- Convolutions count every kernel position of every output, *including* positions over zero
  padding: the dense kernel executes them. Transposed convolutions count C_in·(C_out/groups)·kH·kW
  multiply-adds per *input* position (each input pixel scatters through the whole kernel).
- ``nonzero_macs`` counts only multiply-adds whose weight is nonzero: what a sparse kernel could
  skip to. Per output (or, for a transposed convolution, per input) position a layer executes
  nnz(weight) of them, so nonzero MACs = positions · nnz(weight) (padding again ignored).
- Counts are per sample: the hooks see the real shapes of ``example_inputs`` and divide by its
  batch size.
"""

from __future__ import annotations

import io
import math
import os
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: state_dict entries that are buffers of normalisation layers, not parameters
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _as_args(inputs: Any) -> tuple[Any, ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def count_macs(model: nn.Module, example_inputs: Any) -> dict[str, Any]:
    """Multiply-accumulates per sample of every Conv2d, ConvTranspose2d and Linear.

    Parameters
    ----------
    model : the module (run once in eval mode, without gradients; its mode is restored).
    example_inputs : a batch, e.g. shape (B, 1, 28, 28), or a tuple of inputs; B ≥ 1.

    Returns
    -------
    dict with ``layers`` — {name: {"type", "macs", "nonzero_macs"}} per call order (a module
    called twice is summed) — and the totals ``macs`` and ``nonzero_macs``, all per sample.
    """
    args = _as_args(example_inputs)
    batch = int(args[0].shape[0])
    layers: dict[str, dict[str, Any]] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            nnz = int(torch.count_nonzero(module.weight.detach()))
            if isinstance(module, nn.ConvTranspose2d):
                positions = inputs[0].numel() // inputs[0].shape[1]  # B·H_in·W_in
                per_position = module.weight.numel()  # C_in·(C_out/groups)·kH·kW
            elif isinstance(module, nn.Conv2d):
                positions = output.numel() // output.shape[1]  # B·H_out·W_out
                per_position = module.weight.numel()  # C_out·(C_in/groups)·kH·kW
            else:  # Linear: every leading dimension is a position
                positions = output.numel() // output.shape[-1]
                per_position = module.weight.numel()
            entry = layers.setdefault(name, {"type": type(module).__name__, "macs": 0, "nonzero_macs": 0})
            entry["macs"] += positions * per_position / batch
            entry["nonzero_macs"] += positions * nnz / batch
        return record

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*args)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    for entry in layers.values():  # per-sample counts are integers for any consistent batch
        entry["macs"] = int(round(entry["macs"]))
        entry["nonzero_macs"] = int(round(entry["nonzero_macs"]))
    return {
        "layers": layers,
        "macs": sum(e["macs"] for e in layers.values()),
        "nonzero_macs": sum(e["nonzero_macs"] for e in layers.values()),
    }


def count_parameters(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Total and nonzero parameter entries.

    A module counts its parameters (not its buffers). A state_dict cannot tell the two apart, so
    (ours) it counts every floating-point entry except normalisation buffers (``running_mean``,
    ``running_var``); integer entries such as ``num_batches_tracked`` are never parameters.
    """
    if isinstance(model_or_state, nn.Module):
        tensors = [p.detach() for p in model_or_state.parameters()]
    else:
        tensors = [
            t for k, t in model_or_state.items()
            if t.is_floating_point() and not k.endswith(_BUFFER_SUFFIXES)
        ]
    return {
        "total": sum(t.numel() for t in tensors),
        "nonzero": sum(int(torch.count_nonzero(t)) for t in tensors),
    }


def measure_latency(
    model: nn.Module,
    example_batch: Any,
    repeats: int | None = None,
    warmup: int = 1,
    threads: int | None = None,
    budget_s: float = 0.5,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Wall-clock latency of one forward pass on ``example_batch`` (inference_mode, eval mode).

    After ``warmup`` untimed passes, the first timed pass t₁ chooses the repeats when
    ``repeats=None``: n = ⌊budget_s / t₁⌋ clipped to [3, 200], t₁ being the first of the n samples.
    A call therefore costs about (warmup + 1)·t₁ + budget_s, or (warmup + 3)·t₁ for passes slower
    than budget_s / 3: under 1 s for the MNIST CNN at batch 500 (≈ 0.05–0.1 s a pass in
    channels_last on one core here). ``threads`` sets torch's intra-op threads for the
    measurement and restores them after. ``channels_last`` converts the model and 4-D inputs to
    that layout (oneDNN convolutions prefer it on CPU) and the model back afterwards.

    Returns
    -------
    dict: ``median_s``, ``p10_s``, ``p90_s`` (wall seconds per pass), ``cpu_median_s`` (process
    CPU seconds per pass, all threads: on a shared machine it excludes time spent waiting for a
    core, so with one thread it is the steadier measure of the work), ``repeats``,
    ``batch_size``, ``threads`` (torch threads used), ``channels_last``.
    """
    args = _as_args(example_batch)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    was_training = model.training
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
        args = tuple(a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else a for a in args)

    cpu_times: list[float] = []

    def timed() -> float:
        c0, t0 = time.process_time(), time.perf_counter()
        model(*args)
        t1, c1 = time.perf_counter(), time.process_time()
        cpu_times.append(c1 - c0)
        return t1 - t0

    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(*args)
            times = [timed()]
            n = int(repeats) if repeats is not None else min(200, max(3, int(budget_s / max(times[0], 1e-9))))
            times += [timed() for _ in range(n - 1)]
        used_threads = torch.get_num_threads()
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.train(was_training)
        torch.set_num_threads(old_threads)
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
    return {
        "median_s": statistics.median(times),
        "cpu_median_s": statistics.median(cpu_times),
        "p10_s": q[0],
        "p90_s": q[-1],
        "repeats": n,
        "batch_size": int(args[0].shape[0]),
        "threads": used_threads,
        "channels_last": channels_last,
    }


def file_bytes(path: str | os.PathLike[str]) -> int:
    """Size of a file on disk, in bytes."""
    return Path(path).stat().st_size


def serialized_bytes(obj: Any) -> int:
    """Bytes of ``torch.save(obj)`` (same format as a file), without touching the disk."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getbuffer().nbytes


def state_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Raw tensor payload of a state_dict (numel · itemsize summed), the floor of any dense file."""
    return sum(t.numel() * t.element_size() for t in state.values())


def speedup(dense: Mapping[str, float], other: Mapping[str, float]) -> float:
    """Ratio of median latencies dense / other (> 1 means faster)."""
    return dense["median_s"] / other["median_s"] if other["median_s"] > 0 else math.inf


# --------------------------------------------------------------------------------------------
# What a pruned model costs: the numbers that travel with a certificate and a run's summary

COST_CONVENTIONS = (
    "parameters: nonzero parameter entries of the exported model; macs: multiply-adds per sample "
    "that the exported model executes with dense kernels (Conv2d, ConvTranspose2d, Linear); "
    "nonzero_macs: those with a nonzero weight (what a sparse kernel could skip; padding ignored); "
    "bytes: size of the compact export file (unstructured: bitmask/CSR encoding; channel: the "
    "physically smaller module); latency: median wall-clock seconds of one forward pass on the "
    "issuing machine (inference mode, channels_last, the recorded torch threads) — measured, not "
    "re-derivable elsewhere"
)


def model_cost(model: nn.Module, family: Any, lam: float | None, example: torch.Tensor) -> dict[str, Any]:
    """Parameters, MACs and export bytes of the model pruned at λ (``lam=None``: the dense model,
    whose export is a plain state_dict). ``example``: one input batch (only its shape matters)."""
    if lam is None:
        net, payload = model, model.state_dict()
    else:
        payload, _ = family.export_payload(model, lam)
        net = family.cost_model(model, lam)  # int8: the float layers are counted (precision, not count, changes)
    macs = count_macs(net, torch.zeros_like(example[:1]))
    params = count_parameters(net)
    return {"parameters": params["nonzero"], "parameters_total": params["total"], "macs": macs["macs"],
            "nonzero_macs": macs["nonzero_macs"], "bytes": serialized_bytes(payload)}


def cost_curve(model: nn.Module, family: Any, lambdas: Any, example: torch.Tensor) -> dict[str, list[Any]]:
    """Parameters and MACs of the model pruned at every λ (lists aligned with ``lambdas``); export
    bytes are measured by :func:`model_cost` where they are reported (deployed λ̂, latency points)."""
    x = torch.zeros_like(example[:1])
    rows = []
    for lam in lambdas:
        net = family.cost_model(model, float(lam))
        macs, params = count_macs(net, x), count_parameters(net)
        rows.append({"parameters": params["nonzero"], "macs": macs["macs"], "nonzero_macs": macs["nonzero_macs"]})
    return {"lambda": [float(v) for v in lambdas], **{k: [r[k] for r in rows] for k in rows[0]}}


def latency_at(model: nn.Module, family: Any, lam: float | None, example: torch.Tensor, batch_sizes: Any,
               threads: int | None = 1) -> dict[str, Any]:
    """Measured latency of the model pruned at λ (None: dense) at each batch size, on zeros of the
    example's shape (values do not change the work), in channels_last.

    ``threads`` (default 1, ours): one intra-op thread per forward pass. On a shared CPU, torch's
    OpenMP threads wait for each other at every layer, and a pass with two threads took 46 ms at
    batch 1 where one thread took 0.2 ms (measured on this project's loaded 2-core machine); one
    thread per request is also how a CPU server is usually run. Pass None for torch's default."""
    from .forward import fast_copy, to_fast_layout

    net = fast_copy(model) if lam is None else to_fast_layout(family.export_payload(model, lam)[1])
    out: dict[str, Any] = {}
    for b in batch_sizes:
        x = torch.zeros((int(b), *example.shape[1:]), dtype=example.dtype)
        x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        m = measure_latency(net, x, threads=threads, budget_s=0.3)
        out[f"batch_{int(b)}"] = {k: m[k] for k in ("median_s", "p10_s", "p90_s", "repeats", "threads")}
    return out


#: the cost block of a certificate (every producer assembles it with :func:`cost_block`)
CERTIFICATE_COST_KEYS = ("dense", "deploy", "machine", "conventions")


def cost_block(dense: Mapping[str, Any], deploy: Mapping[str, Any] | None,
               machine_info: Mapping[str, Any]) -> dict[str, Any]:
    """A certificate's cost block: the dense and the certified model's costs (None: nothing
    certified), where they were measured, and the conventions."""
    return {"dense": dict(dense), "deploy": dict(deploy) if deploy is not None else None,
            "machine": dict(machine_info), "conventions": COST_CONVENTIONS}


def cached_cost(cache_dir: str | os.PathLike[str], kind: str, model_checksum: str, family_config: Mapping[str, Any],
                example: torch.Tensor, payload: Mapping[str, Any], compute: Any) -> Any:
    """A cost curve or a latency measurement from the cache, or computed and cached as JSON. The
    key: the kind, the weights, the family's spec and what families compute, the input shape, the
    forward layout, and ``payload`` (λs; batches, machine and threads for latency)."""
    import json
    from pathlib import Path

    from .cache import cached
    from .forward import LAYOUT_VERSION
    from .integrity import content_key
    from .pruning import FAMILY_FORMAT

    key = content_key({"kind": kind, "model_checksum": model_checksum, "family": dict(family_config),
                       "family_format": FAMILY_FORMAT, "input": list(example.shape[1:]), "layout": LAYOUT_VERSION,
                       **dict(payload)})
    return cached(Path(cache_dir) / "costs" / f"{key}.json", lambda p: json.loads(p.read_text())["value"],
                  compute, lambda v, tmp: Path(tmp).write_text(json.dumps({"key": key, "value": v})), kind)[0]


def machine() -> dict[str, Any]:
    """Where latencies were measured (they hold for this machine only)."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


__all__ = [
    "COST_CONVENTIONS", "cost_curve", "count_macs", "count_parameters", "file_bytes",
    "latency_at", "machine", "measure_latency", "model_cost", "serialized_bytes", "speedup", "state_bytes",
]
