"""Nested pruning masks for a whole λ grid from one ranking of the scores (method.md §6).

Scores are ranked once (a stable sort; ties broken by position); at ratio λ the
k(λ) = round(λ·P) lowest-ranked entries of each group are pruned, where a group is the whole pool
(global scope) or one parameter tensor (layer-wise scope). Consequences: masks for increasing λ
are nested, the achieved sparsity is exactly k/P, the dense weights are never modified, and no
quantile is computed (torch.quantile fails above 2^24 elements). round(λ·P) is what
``torch.nn.utils.prune`` uses, so our masks and ``prune.global_unstructured`` agree up to ties.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import OptionError

SCOPES = ("global", "layerwise")
_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)


def prunable_parameters(
    model: nn.Module, include_bias: bool = True, include_norm: bool = True
) -> dict[str, torch.Tensor]:
    """The pruning pool: trainable parameters by full name (the paper code: all of them)."""
    pool: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, _NORM_TYPES)
        for pname, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if is_norm and not include_norm:
                continue
            if pname == "bias" and not include_bias:
                continue
            pool[f"{module_name}.{pname}" if module_name else pname] = param
    if not pool:
        raise ValueError("the pruning pool is empty: no trainable parameter matches the pool options")
    return pool


def n_pruned(lam: float, size: int) -> int:
    """Number of entries pruned at ratio λ in a group of ``size`` entries (as torch's prune)."""
    return int(round(lam * size))


class PruningFamily:
    """A family of nested masks indexed by λ ∈ [0, 1), built from per-parameter scores.

    Higher score = more important = pruned later. ``rank[name]`` holds each entry's position in
    its group's ascending order; the entry is kept at λ iff rank ≥ k(λ) of its group.

    It implements :class:`~.family.Family` (the protocol every family follows); its export is
    the dense architecture's state_dict with exact zeros.
    """

    structure = "unstructured"
    cost_kind = "nonzero_macs"  # dense kernels run every zero: only sparse kernels would gain
    sparsity_of = "pruning pool"

    def __init__(self, ranks: Mapping[str, torch.Tensor], groups: list[list[str]], criterion: str = "", scope: str = "global"):
        self.ranks = dict(ranks)
        self.groups = groups
        self.group_of = {name: g for g, names in enumerate(groups) for name in names}
        self.group_sizes = [sum(self.ranks[n].numel() for n in names) for names in groups]
        self.criterion = criterion
        self.scope = scope
        self.score_info: dict | None = None  # provenance of a data-informed criterion's batch
        self.config: dict = {"criterion": criterion, "scope": scope}  # what rebuilds it (build_family's arguments)
        self.trajectory_checksum: str | None = None  # M&U: the training statistics it was scored with

    @classmethod
    def from_scores(cls, scores: Mapping[str, torch.Tensor], scope: str = "global", criterion: str = "") -> PruningFamily:
        if scope not in SCOPES:
            raise OptionError("scope", scope, ", ".join(SCOPES))
        names = list(scores)
        groups = [names] if scope == "global" else [[n] for n in names]
        ranks: dict[str, torch.Tensor] = {}
        for group in groups:
            flat = torch.cat([scores[n].detach().reshape(-1).to(torch.float64) for n in group])
            if not torch.all(torch.isfinite(flat)):
                raise ValueError(f"pruning scores of {group} contain NaN or infinite values")
            order = torch.sort(flat, stable=True).indices
            rank = torch.empty_like(order)
            rank[order] = torch.arange(flat.numel())
            offset = 0
            for n in group:
                size = scores[n].numel()
                ranks[n] = rank[offset : offset + size].reshape(scores[n].shape)
                offset += size
        return cls(ranks, groups, criterion=criterion, scope=scope)

    @property
    def pool_size(self) -> int:
        return sum(self.group_sizes)

    @property
    def parameter_names(self) -> list[str]:
        """The tensors the family prunes (the pool), by full name."""
        return list(self.ranks)

    def pruned_model(self, model: nn.Module, lam: float, workspace: nn.Module | None = None) -> nn.Module:
        """The model pruned at λ, ready to run: ``workspace`` (a :func:`~confprune.forward.fast_copy`
        of ``model`` returned by an earlier call) with this λ's weights copied in place, or a new
        fast copy. Always built from the dense weights, never cumulatively."""
        from ..forward import fast_copy, load_weights

        net = workspace if workspace is not None else fast_copy(model)
        params = {n: p.detach() for n, p in model.named_parameters() if n in self.ranks}
        return load_weights(net, self.apply(params, lam))

    def exported_module(self, model: nn.Module, lam: float) -> nn.Module | None:
        """None: the export is a masked state of the dense architecture, not a smaller module."""
        return None

    def export_state(self, model: nn.Module, lam: float) -> dict[str, torch.Tensor]:
        """The dense model's state_dict with the pool pruned at λ (loads with ``load_state_dict``)."""
        from .family import masked_state

        return masked_state(model, self, lam)

    def export_payload(self, model: nn.Module, lam: float) -> tuple[Any, nn.Module]:
        """The sparse (bitmask/CSR) encoding of the exported state, and the module that runs it."""
        from .family import masked_payload

        return masked_payload(model, self, lam)

    def cost_model(self, model: nn.Module, lam: float) -> nn.Module:
        return self.pruned_model(model, lam)

    def removal_lambda(self, name: str, lambdas: Any) -> tuple[Any, str]:
        """λ at which each entry of ``name`` is removed: exactly rank / group size."""
        return self.ranks[name].cpu().numpy() / self.group_sizes[self.group_of[name]], "λ at which it is removed"

    def figure_notes(self, lam: float | None) -> list[str]:
        if self.config.get("include_bias", True):
            return []
        why = " (SiPP has no sensitivity for biases)" if self.criterion.startswith("sipp") else ""
        return [f"biases are outside the pruning pool{why}"]

    def pruned_per_group(self, lam: float) -> list[int]:
        if not 0.0 <= lam < 1.0:
            raise ValueError(f"λ must lie in [0, 1), got {lam}")
        return [n_pruned(lam, size) for size in self.group_sizes]

    def masks(self, lam: float) -> dict[str, torch.Tensor]:
        """Boolean keep-masks (True = kept) for every parameter in the pool."""
        ks = self.pruned_per_group(lam)
        return {n: r >= ks[self.group_of[n]] for n, r in self.ranks.items()}

    def sparsity(self, lam: float) -> float:
        """Exact fraction of the pool pruned at λ."""
        return sum(self.pruned_per_group(lam)) / self.pool_size

    def apply(self, params: Mapping[str, torch.Tensor], lam: float) -> dict[str, torch.Tensor]:
        """Pruned copies of the pool parameters (exact zeros where pruned); others untouched."""
        out = dict(params)
        for name, keep in self.masks(lam).items():
            w = params[name]
            out[name] = torch.where(keep.to(w.device), w, torch.zeros((), dtype=w.dtype, device=w.device))
        return out
