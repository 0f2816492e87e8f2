"""The pruning family as a declared interface: what every family implements and consumers call.

A *family* is a nested set of pruned models indexed by λ ∈ [0, 1), fixed before calibration.
Every family — the plain ranking (:class:`~.masks.PruningFamily`), the SiPP hybrid, the channel
family and the int8 wrapper (:class:`~.quantized.QuantizedFamily`) — implements :class:`Family`
structurally (a :class:`typing.Protocol`, no base class). Code outside ``confprune.pruning`` calls
these members and never tests a family's ``structure`` string or probes it with ``hasattr``:

- what it is: ``criterion``, ``scope``, ``structure``, ``config`` (what rebuilds it with
  :func:`~confprune.pruning.build_family`), ``score_info`` / ``trajectory_checksum`` (provenance);
- its pool: ``pool_size``, ``parameter_names``, ``sparsity(λ)``, ``masks(λ)``, ``apply(params, λ)``;
- the model at λ: ``pruned_model(model, λ, workspace)`` (what the sweep evaluates and the user
  runs), ``exported_module(model, λ)`` (a physically smaller module, or None when the export is a
  masked state of the dense architecture), ``export_state(model, λ)`` (the exported tensors),
  ``export_payload(model, λ)`` (what is written, and the module that runs it),
  ``cost_model(model, λ)`` (the module whose layers are counted: MACs and parameters);
- how it is reported: ``cost_kind`` (the MAC count that measures its saving), ``sparsity_of``
  (what ``sparsity(λ)`` is a fraction of), ``removal_lambda(name, λs)`` and
  ``figure_notes(λ)`` (the first-layer figure).

:func:`check_family` checks an object against the protocol (``tests/test_family.py`` runs it on
every registered family).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


@runtime_checkable
class Family(Protocol):
    """Every pruning family (see the module docstring)."""

    criterion: str
    scope: str
    structure: str
    config: dict[str, Any]
    score_info: dict[str, Any] | None
    trajectory_checksum: str | None
    cost_kind: str  # "macs" (executed dense-kernel MACs fall) or "nonzero_macs" (only sparse kernels gain)
    sparsity_of: str  # "pruning pool" or "model": what sparsity(λ) is a fraction of

    @property
    def pool_size(self) -> int: ...

    @property
    def parameter_names(self) -> list[str]: ...

    def sparsity(self, lam: float) -> float: ...

    def masks(self, lam: float) -> dict[str, torch.Tensor]: ...

    def apply(self, params: Mapping[str, torch.Tensor], lam: float) -> dict[str, torch.Tensor]: ...

    def pruned_model(self, model: nn.Module, lam: float, workspace: nn.Module | None = None) -> nn.Module: ...

    def exported_module(self, model: nn.Module, lam: float) -> nn.Module | None: ...

    def export_state(self, model: nn.Module, lam: float) -> dict[str, torch.Tensor]: ...

    def export_payload(self, model: nn.Module, lam: float) -> tuple[Any, nn.Module]: ...

    def cost_model(self, model: nn.Module, lam: float) -> nn.Module: ...

    def removal_lambda(self, name: str, lambdas: np.ndarray) -> tuple[np.ndarray, str]: ...

    def figure_notes(self, lam: float | None) -> list[str]: ...


#: the members a family must have (attributes and methods), in the order above
PROTOCOL_MEMBERS = (
    "criterion", "scope", "structure", "config", "score_info", "trajectory_checksum", "cost_kind", "sparsity_of",
    "pool_size", "parameter_names", "sparsity", "masks", "apply", "pruned_model", "exported_module", "export_state",
    "export_payload", "cost_model", "removal_lambda", "figure_notes",
)


def check_family(obj: Any) -> None:
    """Raise TypeError naming the first member of :class:`Family` that ``obj`` lacks."""
    for name in PROTOCOL_MEMBERS:
        try:
            getattr(obj, name)
        except AttributeError:
            raise TypeError(f"{type(obj).__name__} is not a pruning Family: it has no {name!r}") from None
    if obj.cost_kind not in ("macs", "nonzero_macs"):
        raise TypeError(f"{type(obj).__name__}.cost_kind={obj.cost_kind!r}: macs or nonzero_macs")


def scanned_removal_lambda(family: Any, name: str, lambdas: np.ndarray) -> tuple[np.ndarray, str]:
    """λ at which each entry of ``name`` is removed, scanned on the evaluated grid: the first grid
    λ whose mask drops it (entries never removed get 1). For families without a closed form."""
    when: np.ndarray | None = None
    for lam in np.sort(np.asarray(lambdas, dtype=np.float64)):
        removed = ~family.masks(float(lam))[name].cpu().numpy()
        if when is None:
            when = np.ones(removed.shape)
        when = np.where(removed & (when == 1), lam, when)
    if when is None:
        raise ValueError("no λ to scan")
    return when, "first grid λ without it (1: never)"


def masked_state(model: nn.Module, family: Any, lam: float) -> dict[str, torch.Tensor]:
    """The dense model's state_dict with the family's pool pruned at λ (exact zeros)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = {k: state[k] for k in family.parameter_names}
    state.update({k: v.clone() for k, v in family.apply(params, lam).items()})
    return state


def masked_payload(model: nn.Module, family: Any, lam: float) -> tuple[Any, nn.Module]:
    """A masked family's export: the sparse encoding of the dense-shape state_dict, and the module."""
    from ..compact import encode_sparse_state
    from ..forward import fast_copy

    net = family.pruned_model(model, lam, fast_copy(model))
    state = {k: v.contiguous() for k, v in net.state_dict().items()}  # the exported layout
    return encode_sparse_state(state), net


__all__ = ["PROTOCOL_MEMBERS", "Family", "check_family", "masked_payload", "masked_state", "scanned_removal_lambda"]
