"""Structured (channel) pruning: a nested family of physically removable output channels.

A *unit* is one output channel of a Conv2d / ConvTranspose2d or one output feature of a Linear.
Units that must disappear together form a *unit group* (one prunable position of a coupled
group): the producer's filter row(s), its bias, the BatchNorm entries after it, every consumer's
input columns (after a Flatten: the H·W consecutive Linear inputs of one conv channel), the
decoder columns fed through a U-Net skip concatenation, and, for residual additions, the units of
every added tensor. The dependency analysis comes from torch-pruning's DepGraph (traced once at
construction, see docs/structured_pruning.md for why); everything else — ranking, masks, the
physical surgery and the description — is ours and works on plain data, so the family does not
keep the graph and a pruned copy needs no tracing.

Ranking is done once, so the kept sets are nested in λ and Learn-Then-Test applies unchanged:

- ``global`` scope: one ascending order over all units of all groups; at λ the first
  ``min(round(λ·U), U − G)`` units of that order are removed (U units in G groups). The best unit
  of every group is left out of the order (ours): a layer is never emptied, and the global count
  round(λ·U) is honoured exactly until only one unit per group is left, where the family
  saturates (``unit_sparsity`` then reports the achieved fraction).
- ``layerwise`` scope: ``min(round(λ·U_g), U_g − 1)`` lowest-ranked units of each group.

Scores (higher = more important = removed later), per producer layer, then normalised by the
layer's mean unit score (ours: a layer's scores then average 1 whatever its fan-in, width or
scale, so a global ranking compares *relative* importance inside layers; max-normalisation would
hinge on one outlier and L2-normalisation shrinks with the layer's width and would bias pruning
towards wide layers). A unit group's score is the sum of its producers' normalised scores.

- ``l1`` / ``l2``: norm of the unit's filter (the producer's weight slice; bias excluded, ours).
- ``activation``: mean |output| of the unit over a batch of *training* inputs (``score_inputs``);
  the output is taken after the BatchNorm that directly follows the producer when there is one
  (ours: BatchNorm rescales every channel, so the raw convolution output says little).
- ``random``: seeded uniform scores (baseline).

Equivalence: zeroing a unit's producer rows, bias, BatchNorm γ/β and consumer columns
(:meth:`ChannelFamily.masked_state`) computes the same function as physically removing it
(:meth:`ChannelFamily.pruned_model`), up to float rounding; this is checked once at construction
at the most pruned configuration, which catches models whose operations mix channels in a way the
dependency graph does not model (the constructor then refuses the model).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ..errors import OptionError
from .masks import n_pruned

CHANNEL_CRITERIA = ("l1", "l2", "activation", "random")
SCOPES = ("global", "layerwise")
#: modules whose output channels are prunable units
_UNIT_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
#: modules the surgery and the masks know how to shrink
_SUPPORTED_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class GroupMember:
    """One module of a unit group: ``role`` is producer (its output channels), norm (BatchNorm
    entries) or consumer (its input channels); ``index[u]`` lists the channel indices of unit ``u``
    along that module's channel dimension (several for a Linear fed through a Flatten)."""

    module: str
    role: str
    index: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class UnitGroup:
    """Coupled units: ``units`` positions that are kept or removed together in every member."""

    name: str  # the first producer, in module order
    units: int
    members: tuple[GroupMember, ...]

    @property
    def producers(self) -> list[str]:
        return [m.module for m in self.members if m.role == "producer"]


def _as_args(inputs: Any) -> tuple[Any, ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _channel_dim(module: nn.Module, role: str) -> int:
    """Weight dimension holding the output (producer) or input (consumer) channels."""
    if isinstance(module, nn.ConvTranspose2d):  # weight: (in, out / groups, kH, kW)
        return 1 if role == "producer" else 0
    return 0 if role in ("producer", "norm") else 1


def _unsupported_reason(module: nn.Module) -> str | None:
    if not isinstance(module, _SUPPORTED_TYPES):
        return f"{type(module).__name__} is not supported by the channel surgery"
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.groups != 1:
        return f"grouped convolution (groups={module.groups}) is not supported"
    if isinstance(module, _NORM_TYPES) and not module.affine:
        return "BatchNorm without affine parameters cannot zero a channel"
    return None


def dependency_groups(
    model: nn.Module, example_inputs: Any, protected_layers: Sequence[str] = ()
) -> tuple[list[UnitGroup], list[dict[str, str]]]:
    """Trace ``model`` once with torch-pruning's DepGraph and return (prunable groups, protected).

    Protected groups (with the reason) are those whose channels reach a model output, that
    contain a module type the surgery does not support, or that contain a layer named in
    ``protected_layers``. The model is not modified (a private copy is traced).
    """
    try:
        import torch_pruning as tp
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "structure='channel' needs torch-pruning (pip install \"confprune[channel]\"); "
            "it is used for the dependency analysis only"
        ) from err
    traced = copy.deepcopy(model).eval()
    for p in traced.parameters():
        p.requires_grad_(True)  # DepGraph follows autograd's graph
    name_of = {m: n for n, m in traced.named_modules()}
    order = {n: i for i, n in enumerate(name_of.values())}
    with torch.inference_mode(False), torch.enable_grad():
        args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in _as_args(example_inputs))
        graph = tp.DependencyGraph().build_dependency(traced, example_inputs=args, verbose=False)
        raw_groups = list(graph.get_all_groups(ignored_layers=[], root_module_types=_UNIT_TYPES))
    groups: list[UnitGroup] = []
    protected: list[dict[str, str]] = []
    for raw in raw_groups:
        units = len(raw[0].idxs)
        members: dict[tuple[str, str], list[list[int]]] = {}
        reason = None
        for item in raw.items:
            target = item.dep.target
            module = target.module
            is_out = graph.is_out_channel_pruning_fn(item.dep.handler)
            if isinstance(module, tp.ops._OutputOp) or (is_out and module in name_of and not target.outputs):
                reason = reason or "its channels reach a model output"
            if module not in name_of:  # a functional op of the graph (ReLU, cat, flatten, …)
                continue
            bad = _unsupported_reason(module)
            if bad is not None:
                reason = reason or f"{name_of[module]}: {bad}"
                continue
            if name_of[module] in protected_layers:
                reason = reason or f"{name_of[module]} is protected by the caller"
            role = "norm" if isinstance(module, _NORM_TYPES) else ("producer" if is_out else "consumer")
            per_unit = members.setdefault((name_of[module], role), [[] for _ in range(units)])
            for idx, root in zip(item.idxs, item.root_idxs, strict=True):
                per_unit[int(root)].append(int(idx))
        producers = sorted({n for n, role in members if role == "producer"}, key=order.__getitem__)
        name = producers[0] if producers else name_of[raw[0].dep.target.module]
        if reason is not None or not producers:
            protected.append({"name": name, "reason": reason or "no supported producer layer"})
            continue
        member_list = tuple(
            GroupMember(module=n, role=role, index=tuple(tuple(sorted(ix)) for ix in per_unit))
            for (n, role), per_unit in sorted(members.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
        )
        groups.append(UnitGroup(name=name, units=units, members=member_list))
    groups.sort(key=lambda g: order[g.name])
    protected.sort(key=lambda p: order[p["name"]])
    return groups, protected


class ChannelFamily:
    """Nested channel-pruning family over λ ∈ [0, 1) (``pruning.structure=channel``).

    Parameters
    ----------
    model : the dense model (not modified).
    example_inputs : a batch (or tuple of inputs) the model accepts, e.g. shape (1, 1, 28, 28);
        used to trace the dependencies and for the construction-time equivalence check only.
    criterion : ``l1`` (default), ``l2``, ``activation`` or ``random``.
    scope : ``global`` (one ranking after per-layer mean normalisation) or ``layerwise``.
    seed : seed of the ``random`` criterion.
    score_inputs : a batch of *training* inputs, shape (B, ...) — required by ``activation``;
        never calibration or test data (the family must be fixed before calibration).
    protected_layers : module names whose unit groups are never pruned (besides output layers).
    round_to : keep a multiple of this many units in every group (the count the ranking keeps,
        rounded *up*; a group smaller than it is kept whole): channel counts that vectorised CPU
        kernels handle without a remainder loop. The removed units stay a prefix of each group's
        removal order, so the family stays nested in λ (fixed-sequence testing's premise). 1: none.
    """

    structure = "channel"
    cost_kind = "macs"  # removed units leave the executed (dense-kernel) multiply-adds
    sparsity_of = "model"

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        criterion: str = "l1",
        scope: str = "global",
        seed: int = 0,
        score_inputs: torch.Tensor | None = None,
        *,
        protected_layers: Sequence[str] = (),
        round_to: int = 1,
    ) -> None:
        if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
            raise OptionError("round_to", round_to, "an integer ≥ 1 (1: no rounding)")
        self.round_to = round_to
        if criterion not in CHANNEL_CRITERIA:
            raise ValueError(f"unknown channel criterion {criterion!r}; allowed: {', '.join(CHANNEL_CRITERIA)}")
        if scope not in SCOPES:
            raise OptionError("scope", scope, ", ".join(SCOPES))
        if criterion == "activation" and score_inputs is None:
            raise ValueError("criterion='activation' needs score_inputs: a batch of training inputs")
        self.criterion = criterion
        self.scope = scope
        self.seed = int(seed)
        self.groups, self.protected = dependency_groups(model, example_inputs, protected_layers)
        if not self.groups:
            raise ValueError("the model has no prunable channel group (every group reaches an output or is unsupported)")
        modules = dict(model.named_modules())
        # per member module: (type name, weight shape, has bias) — the architecture the family fits
        self._shapes = {
            m.module: (
                type(modules[m.module]).__name__,
                tuple(modules[m.module].weight.shape),
                modules[m.module].bias is not None,
            )
            for g in self.groups for m in g.members
        }
        self.n_units = sum(g.units for g in self.groups)
        self.pool_size = sum(p.numel() for p in model.parameters())
        # The shared family protocol (see PruningFamily): what rebuilds it, and its provenance.
        self.config: dict[str, Any] = {"structure": "channel", "criterion": criterion, "scope": scope, "seed": self.seed}
        self.score_info: dict[str, Any] | None = None
        self.trajectory_checksum: str | None = None
        self.scores = self._unit_scores(model, score_inputs)
        self._order = self._removal_order()
        self._check_equivalence(model, example_inputs)

    # ------------------------------------------------------------------ ranking
    def _unit_scores(self, model: nn.Module, score_inputs: torch.Tensor | None) -> list[torch.Tensor]:
        """Per group, float64 scores of shape (units,): sum of normalised producer scores."""
        if self.criterion == "random":
            gen = torch.Generator().manual_seed(self.seed)
            draws = torch.rand(self.n_units, generator=gen, dtype=torch.float64)
            return list(torch.split(draws, [g.units for g in self.groups]))
        modules = dict(model.named_modules())
        channel_scores = (
            _activation_scores(model, self.groups, score_inputs) if self.criterion == "activation" else None
        )
        out: list[torch.Tensor] = []
        for g in self.groups:
            total = torch.zeros(g.units, dtype=torch.float64)
            for m in g.members:
                if m.role != "producer":
                    continue
                if channel_scores is not None:
                    per_channel = channel_scores[m.module]
                else:
                    layer = modules[m.module]
                    filters = layer.weight.detach().double().movedim(_channel_dim(layer, "producer"), 0)
                    order = 1 if self.criterion == "l1" else 2
                    per_channel = torch.linalg.vector_norm(filters.reshape(filters.shape[0], -1), ord=order, dim=1)
                unit = torch.stack([per_channel[list(ix)].sum() for ix in m.index])
                mean = unit.mean()
                total += unit / mean if mean > 0 else unit
            if not torch.all(torch.isfinite(total)):
                raise ValueError(f"channel scores of group {g.name} contain NaN or infinite values")
            out.append(total)
        return out

    def _removal_order(self) -> list[list[tuple[int, int]]]:
        """Removal sequences of (group, unit): one for global scope, one per group otherwise.
        Each group's best unit is never in a sequence (a layer keeps ≥ 1 unit)."""
        def ascending(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
            # ties broken by position (group, unit): stable and reproducible
            return sorted(pairs, key=lambda gu: (float(self.scores[gu[0]][gu[1]]), gu[0], gu[1]))

        per_group = [ascending([(g, u) for u in range(grp.units)])[:-1] for g, grp in enumerate(self.groups)]
        if self.scope == "layerwise":
            return per_group
        return [ascending([gu for seq in per_group for gu in seq])]

    def _removed(self, lam: float) -> list[list[int]]:
        """Removed unit indices per group at λ (sorted)."""
        if not 0.0 <= lam < 1.0:
            raise ValueError(f"λ must lie in [0, 1), got {lam}")
        removed: list[list[int]] = [[] for _ in self.groups]
        if self.scope == "global":
            k = n_pruned(lam, self.n_units)
            for g, u in self._order[0][:k]:
                removed[g].append(u)
        else:
            for g, seq in enumerate(self._order):
                for _, u in seq[: n_pruned(lam, self.groups[g].units)]:
                    removed[g].append(u)
        if self.round_to > 1:  # keep ⌈kept / k⌉·k units: drop the last-removed ones back in
            for g, r in enumerate(removed):
                units = self.groups[g].units
                kept = min(units, -(-(units - len(r)) // self.round_to) * self.round_to)
                del r[units - kept:]
        return [sorted(r) for r in removed]

    # ------------------------------------------------------------------ public queries
    def kept_units(self, lam: float) -> dict[str, int]:
        """Units kept at λ per prunable producer layer (coupled producers share a count)."""
        removed = self._removed(lam)
        return {p: g.units - len(r) for g, r in zip(self.groups, removed, strict=True) for p in g.producers}

    def unit_sparsity(self, lam: float) -> float:
        """Fraction of the ``n_units`` prunable unit groups removed at λ."""
        return sum(len(r) for r in self._removed(lam)) / self.n_units

    def sparsity(self, lam: float) -> float:
        """Fraction of the dense model's parameters removed at λ (weights, biases, BatchNorm γ/β)."""
        removed = 0
        for module, sides in self._channel_removals(lam).items():  # counts, no masks: cheap per λ
            kind, shape, has_bias = self._shapes[module]
            r_out, r_in = len(sides["out"]), len(sides["in"])
            if kind.startswith("BatchNorm"):
                removed += 2 * r_out  # γ and β
                continue
            out_dim, in_dim = (1, 0) if kind == "ConvTranspose2d" else (0, 1)
            n_out, n_in = shape[out_dim], shape[in_dim]
            per_pair = math.prod(shape) // (n_out * n_in)  # kernel size
            removed += (n_out * n_in - (n_out - r_out) * (n_in - r_in)) * per_pair
            removed += r_out if has_bias else 0
        return removed / self.pool_size

    @property
    def parameter_names(self) -> list[str]:
        """Parameters a mask may touch (the family's analogue of ``PruningFamily.ranks`` keys)."""
        return list(self.masks(0.0))

    def _channel_removals(self, lam: float) -> dict[str, dict[str, set[int]]]:
        """Per module: removed channel indices on its output side ("out") and input side ("in")."""
        out: dict[str, dict[str, set[int]]] = {}
        for g, removed in zip(self.groups, self._removed(lam), strict=True):
            for m in g.members:
                side = "in" if m.role == "consumer" else "out"
                sides = out.setdefault(m.module, {"out": set(), "in": set()})
                for u in removed:
                    sides[side].update(m.index[u])
        return out

    def masks(self, lam: float) -> dict[str, torch.Tensor]:
        """Boolean keep-masks (True = kept) in dense shape for every parameter of the modules in a
        group: weight rows/columns of removed units, their bias and BatchNorm γ/β."""
        keep: dict[str, torch.Tensor] = {}
        for module, sides in self._channel_removals(lam).items():
            kind, shape, has_bias = self._shapes[module]
            if kind.startswith("BatchNorm"):
                k = torch.ones(shape[0], dtype=torch.bool)
                k[sorted(sides["out"])] = False
                keep[f"{module}.weight"] = k
                keep[f"{module}.bias"] = k.clone()
                continue
            out_dim, in_dim = (1, 0) if kind == "ConvTranspose2d" else (0, 1)
            out_keep = torch.ones(shape[out_dim], dtype=torch.bool)
            out_keep[sorted(sides["out"])] = False
            in_keep = torch.ones(shape[in_dim], dtype=torch.bool)
            in_keep[sorted(sides["in"])] = False
            view = [1] * len(shape)
            view_out, view_in = list(view), list(view)
            view_out[out_dim] = -1
            view_in[in_dim] = -1
            keep[f"{module}.weight"] = (out_keep.view(view_out) & in_keep.view(view_in)).expand(shape).clone()
            if has_bias:
                keep[f"{module}.bias"] = out_keep
        return keep

    def apply(self, params: Mapping[str, torch.Tensor], lam: float) -> dict[str, torch.Tensor]:
        """Copies of ``params`` with the removed units zeroed (names absent from ``params``, e.g.
        a bias-free layer's bias, are skipped); other entries untouched."""
        out = dict(params)
        for name, keep in self.masks(lam).items():
            if name in params:
                w = params[name]
                out[name] = torch.where(keep.to(w.device), w, torch.zeros((), dtype=w.dtype, device=w.device))
        return out

    def masked_state(self, model: nn.Module, lam: float) -> dict[str, torch.Tensor]:
        """The dense-shape state_dict of ``model`` with the units removed at λ zeroed (producer
        rows, bias, BatchNorm γ/β, consumer columns); BatchNorm running statistics are kept (a zero
        γ and β already make the channel's output zero). Loads with ``load_state_dict``."""
        self._check_architecture(model)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state.update(self.apply(state, lam))
        return state

    def pruned_model(self, model: nn.Module, lam: float, workspace: nn.Module | None = None) -> nn.Module:
        """A physically smaller copy of ``model`` (eval mode) without the units removed at λ;
        ``model`` is untouched. Its outputs equal those of :meth:`masked_state` up to rounding.
        (``workspace``: accepted for the family protocol; a smaller model is built each time.)"""
        self._check_architecture(model)
        pruned = copy.deepcopy(model).eval()
        modules = dict(pruned.named_modules())
        for name, sides in self._channel_removals(lam).items():
            _shrink(modules[name], sides["out"], sides["in"])
        return pruned

    def exported_module(self, model: nn.Module, lam: float) -> nn.Module | None:
        """The physically smaller module (what is exported)."""
        return self.pruned_model(model, lam)

    def export_state(self, model: nn.Module, lam: float) -> dict[str, torch.Tensor]:
        """The physically smaller module's state_dict."""
        return {k: v.detach().clone() for k, v in self.pruned_model(model, lam).state_dict().items()}

    def export_payload(self, model: nn.Module, lam: float) -> tuple[Any, nn.Module]:
        from ..compact import pruned_module_payload

        net = self.pruned_model(model, lam)
        return pruned_module_payload(net), net

    def cost_model(self, model: nn.Module, lam: float) -> nn.Module:
        return self.pruned_model(model, lam)

    def removal_lambda(self, name: str, lambdas: Any) -> tuple[Any, str]:
        from .family import scanned_removal_lambda

        return scanned_removal_lambda(self, name, lambdas)

    def figure_notes(self, lam: float | None) -> list[str]:
        return ["channel pruning removes whole output units (kernel, bias, BatchNorm together)"]

    def description(self) -> dict[str, Any]:
        """JSON-able record for certificates: criterion, scope, groups, units per layer, and a
        sha256 of the removal order so that a verifier can check an independent rebuild."""
        order = [[list(gu) for gu in seq] for seq in self._order]
        return {
            "structure": self.structure,
            "criterion": self.criterion,
            "scope": self.scope,
            "seed": self.seed,
            "normalisation": "per-layer mean of the unit scores; group score = sum over producers",
            "n_units": self.n_units,
            "model_parameters": self.pool_size,
            "units_per_layer": {p: g.units for g in self.groups for p in g.producers},
            "groups": [
                {
                    "name": g.name,
                    "units": g.units,
                    "producers": g.producers,
                    "norms": [m.module for m in g.members if m.role == "norm"],
                    "consumers": [m.module for m in g.members if m.role == "consumer"],
                }
                for g in self.groups
            ],
            "protected": list(self.protected),
            "removal_order_sha256": hashlib.sha256(json.dumps(order).encode()).hexdigest(),
        }

    # ------------------------------------------------------------------ checks
    def _check_architecture(self, model: nn.Module) -> None:
        modules = dict(model.named_modules())
        for name, (kind, shape, _) in self._shapes.items():
            m = modules.get(name)
            if m is None or type(m).__name__ != kind or tuple(m.weight.shape) != shape:
                found = None if m is None else (type(m).__name__, tuple(m.weight.shape))
                raise ValueError(f"model does not match the family's architecture at {name}: "
                                 f"expected {kind}{shape}, found {found}")

    def _check_equivalence(self, model: nn.Module, example_inputs: Any) -> None:
        """Most pruned configuration: physical removal must reproduce the masked dense model.

        A structural check, not a numerical one: rounding differs by ~1e-6 relative, while an
        operation that mixes channels unseen by the dependency graph changes outputs by O(1)."""
        lam_max = _largest_lambda_below_one(self.n_units)
        args = _as_args(example_inputs)
        with torch.no_grad():
            was_training = model.training
            model.eval()
            try:
                masked = functional_call(model, self.masked_state(model, lam_max), args)
                try:
                    physical = self.pruned_model(model, lam_max)(*args)
                except RuntimeError as err:
                    raise ValueError(f"channel pruning breaks this model's forward pass: {err}") from err
            finally:
                model.train(was_training)
        for a, b in zip(_tensors(masked), _tensors(physical), strict=True):
            scale = 1.0 + float(a.abs().max()) if a.numel() else 1.0
            if a.shape != b.shape or float((a - b).abs().max()) > 1e-3 * scale:
                raise ValueError(
                    "physically pruned and masked models disagree on the example inputs: the model "
                    "mixes channels in a way the dependency graph does not capture; channel pruning "
                    "is not available for it (protect the offending layers with protected_layers)"
                )


def _largest_lambda_below_one(n_units: int) -> float:
    # round(λ·U) = U − 1 at λ = (U − 1)/U < 1: the family's most pruned state (every group at 1 unit)
    return (n_units - 1) / n_units if n_units > 1 else 0.0


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _tensors(v)]
    return []


def _activation_scores(
    model: nn.Module, groups: list[UnitGroup], score_inputs: torch.Tensor, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """Mean |output| per channel of every producer, float64 of shape (channels,), over
    ``score_inputs`` (training inputs); taken after the BatchNorm that directly consumes the
    producer's output when the group has one."""
    modules = dict(model.named_modules())
    producers = {m.module for g in groups for m in g.members if m.role == "producer"}
    norms = {m.module for g in groups for m in g.members if m.role == "norm"}
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    last_out: dict[str, torch.Tensor] = {}
    follows: dict[str, str] = {}  # producer -> the norm applied to its output

    def accumulate(name: str, out: torch.Tensor) -> None:
        dim = out.dim() - 1 if isinstance(modules[name], nn.Linear) else 1
        a = out.detach().abs().double().movedim(dim, -1).reshape(-1, out.shape[dim])
        sums[name] = sums.get(name, torch.zeros(out.shape[dim], dtype=torch.float64)) + a.sum(0)
        counts[name] = counts.get(name, 0) + a.shape[0]

    def producer_hook(name: str):
        def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            last_out[name] = out
            accumulate(name, out)
        return hook

    def norm_hook(name: str):
        def hook(_m: nn.Module, inp: Any, out: torch.Tensor) -> None:
            for p, t in last_out.items():
                if inp[0] is t:
                    follows[p] = name
            accumulate(name, out)
        return hook

    handles = [modules[n].register_forward_hook(producer_hook(n)) for n in producers]
    handles += [modules[n].register_forward_hook(norm_hook(n)) for n in norms]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, score_inputs.shape[0], batch_size):
                last_out.clear()
                model(score_inputs[s : s + batch_size])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {p: sums[follows.get(p, p)] / counts[follows.get(p, p)] for p in producers}


def _shrink(module: nn.Module, removed_out: set[int], removed_in: set[int]) -> None:
    """Remove output channels ``removed_out`` and input channels ``removed_in`` in place."""
    def keep(n: int, removed: set[int]) -> torch.Tensor:
        return torch.tensor([i for i in range(n) if i not in removed], dtype=torch.long)

    def replace(attr: str, value: torch.Tensor) -> None:
        old = getattr(module, attr)
        if isinstance(old, nn.Parameter):
            setattr(module, attr, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))
        else:
            setattr(module, attr, value.contiguous())

    if isinstance(module, _NORM_TYPES):
        k = keep(module.num_features, removed_out)
        for attr in ("weight", "bias", "running_mean", "running_var"):
            if getattr(module, attr, None) is not None:
                replace(attr, getattr(module, attr).detach()[k])
        module.num_features = len(k)
        return
    out_dim, in_dim = (1, 0) if isinstance(module, nn.ConvTranspose2d) else (0, 1)
    w = module.weight.detach()
    k_out = keep(w.shape[out_dim], removed_out)
    k_in = keep(w.shape[in_dim], removed_in)
    replace("weight", w.index_select(out_dim, k_out).index_select(in_dim, k_in))
    if module.bias is not None:
        replace("bias", module.bias.detach()[k_out])
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = len(k_out), len(k_in)
    else:
        module.out_channels, module.in_channels = len(k_out), len(k_in)


__all__ = ["CHANNEL_CRITERIA", "SCOPES", "ChannelFamily", "GroupMember", "UnitGroup", "dependency_groups"]
