"""Pruning: criteria (scores) and the nested mask family built from them.

A ``pruning`` config's keys are :func:`build_family`'s keyword arguments — ``criterion``,
``scope``, ``include_bias``, ``include_norm``, ``seed`` — plus the chosen criterion's own options
(its keyword-only arguments, e.g. ``eps`` for M&U, ``batch_size`` for SiPP). New criteria register
in ``CRITERIA`` (a scoring function) or ``FAMILIES`` (a family that is not a plain ranking).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, OptionError
from .family import Family, check_family
from .hybrid import HybridFamily
from .masks import SCOPES, PruningFamily, n_pruned, prunable_parameters
from .scores import (
    CRITERIA,
    ScoreContext,
    magnitude_scores,
    mu_scores,
    random_scores,
    sipp_batch_size,
    sipp_patches,
    sipp_scores,
)


def sipp_hybrid_family(
    model: nn.Module, pool: Mapping[str, torch.Tensor], ctx: ScoreContext, scope: str, *,
    batch_size: int | None = None, delta_failure: float = 1e-16,
) -> PruningFamily:
    """SiPP hybrid (see :mod:`.hybrid`): deterministic SiPP ranks plus per-group importance
    sampling; ``delta_failure`` is the sampling bound's failure probability δ_f (ours: 1e-16)."""
    sens = sipp_scores(model, pool, ctx, batch_size=batch_size)
    base = PruningFamily.from_scores(sens, scope=scope, criterion="sipp")
    patches = sipp_patches(model, ctx.training_batch(0)[:1])  # the batch sipp_scores drew
    return HybridFamily(base, sens, pool, patches, seed=ctx.seed, delta_failure=float(delta_failure))


#: Version of what the families compute, part of every loss-table and cost cache key: bump it when
#: a family's pruned models change for the same config (2: int8 Linear layers run per sample).
FAMILY_FORMAT = 2
#: families that are not a plain ranking of scores: (model, pool, ctx, scope, **options) -> family
FAMILIES: dict[str, Callable[..., PruningFamily]] = {"sipp_hybrid": sipp_hybrid_family}
#: every criterion a config may name
ALL_CRITERIA = (*CRITERIA, *FAMILIES)
#: criteria that read a batch of training inputs (data-informed)
NEEDS_SCORE_INPUTS = frozenset({"sipp", "sipp_hybrid"})
#: build_family's own keyword arguments that a config may set (criterion options come on top)
FAMILY_KEYS = ("criterion", "scope", "include_bias", "include_norm", "seed", "structure")
STRUCTURES = ("unstructured", "channel")


def channel_options(*, batch_size: int = 256, protected_layers: Sequence[str] = (), round_to: int = 1) -> None:
    """The options of the channel family's data-informed criterion (``activation``): the number
    of training inputs its unit scores are averaged over; and :func:`channel_common`'s."""


def channel_common(*, protected_layers: Sequence[str] = (), round_to: int = 1) -> None:
    """The options of every channel criterion: ``protected_layers``, module names whose units are
    never removed (e.g. a layer whose output the model reshapes in a way the dependency graph does
    not capture, such as CREPE's last convolution, flattened time-major into its classifier);
    ``round_to``, keep a multiple of this many units per layer (kernel-friendly channel counts;
    :class:`~.structured.ChannelFamily`)."""


#: a criterion name that means the same for whole units: the magnitude of a unit is its filter's L1 norm
CHANNEL_ALIASES = {"magnitude": "l1"}
#: channel criteria (pruning.structure=channel) → the function whose keyword-only arguments are their options
CHANNEL_OPTIONS: dict[str, Callable[..., None]] = {
    "l1": channel_common, "l2": channel_common, "activation": channel_options, "random": channel_common,
}


def requires_module(options: Mapping[str, Any]) -> str | None:
    """The optional module a pruning config needs beyond the core install (channel pruning traces
    the model with torch-pruning), or None."""
    return "torch_pruning" if options.get("structure", "unstructured") == "channel" else None


def criterion_options(criterion: str) -> dict[str, inspect.Parameter]:
    """The options (keyword-only arguments) of a registered criterion."""
    fn = CRITERIA.get(criterion) or FAMILIES[criterion]
    return {n: p for n, p in inspect.signature(fn).parameters.items() if p.kind == inspect.Parameter.KEYWORD_ONLY}


def check_pruning_options(options: Mapping[str, Any], group: str = "pruning") -> None:
    """Check a pruning config against :func:`build_family` and the criterion's own options;
    raises :class:`ConfigError` naming ``<group>.<key>``."""
    from ..options import check_options

    structure = options.get("structure", "unstructured")
    if structure not in STRUCTURES:
        raise ConfigError(f"{group}.structure", structure, ", ".join(STRUCTURES))
    criterion = options.get("criterion", "magnitude")
    if structure == "channel":
        criterion = CHANNEL_ALIASES.get(criterion, criterion)
    allowed = CHANNEL_OPTIONS if structure == "channel" else ALL_CRITERIA
    if criterion not in allowed:
        raise ConfigError(f"{group}.criterion", criterion, f"{', '.join(allowed)} (with structure={structure})")
    if options.get("scope", "global") not in SCOPES:
        raise ConfigError(f"{group}.scope", options.get("scope"), ", ".join(SCOPES))
    own = {n: p for n, p in inspect.signature(build_family).parameters.items() if n in FAMILY_KEYS}
    if structure == "channel":
        for key in ("include_bias", "include_norm"):
            if options.get(key, True) is not True:
                raise ConfigError(f"{group}.{key}", options[key],
                                  "true with structure=channel (a removed unit takes its bias and BatchNorm with it)")
        check_options(group, CHANNEL_OPTIONS[criterion], options, also=own,
                      what=f"channel pruning with criterion {criterion!r}")
        k = options.get("round_to", 1)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"{group}.round_to", k, "an integer ≥ 1 (1: no rounding)")
        protected = options.get("protected_layers", ())
        if isinstance(protected, str) or not all(isinstance(n, str) for n in protected):
            raise ConfigError(f"{group}.protected_layers", protected, "a list of module names, e.g. [conv6]")
        return
    scorer = CRITERIA.get(criterion) or FAMILIES[criterion]
    check_options(group, scorer, options, skip=("model", "pool", "ctx", "scope"), also=own,
                  what=f"pruning with criterion {criterion!r}")


def check_family_fits(model: nn.Module, options: Mapping[str, Any], model_name: str, group: str = "pruning") -> None:
    """Check, on the untrained model, that the pool is not empty and that the criterion can score
    it (SiPP: Linear and Conv2d weights only); raises :class:`ConfigError` naming the key."""
    include_bias, include_norm = options.get("include_bias", True), options.get("include_norm", True)
    try:
        pool = prunable_parameters(model, include_bias=include_bias, include_norm=include_norm)
    except ValueError:
        raise ConfigError(f"{group}.include_bias", include_bias, "settings that leave a non-empty pruning pool") from None
    criterion = options.get("criterion", "magnitude")
    if options.get("structure", "unstructured") == "channel" or criterion not in NEEDS_SCORE_INPUTS:
        return
    modules = dict(model.named_modules())
    for name in pool:
        owner, _, pname = name.rpartition(".")
        module = modules.get(owner)
        if pname == "bias":
            raise ConfigError(f"{group}.include_bias", include_bias, f"false with {criterion} (biases have no sensitivity)")
        if pname != "weight" or not isinstance(module, (nn.Linear, nn.Conv2d)):
            if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
                raise ConfigError(f"{group}.include_norm", include_norm,
                                  f"false with {criterion} (normalisation parameters have no sensitivity)")
            raise ConfigError(
                f"{group}.criterion", criterion,
                f"a criterion that can score model {model_name!r}: SiPP scores Linear and Conv2d weights, but the "
                f"pool holds {type(module).__name__} {name!r}; use magnitude, layerwise, random or mu",
            )


def build_family(
    model: nn.Module,
    criterion: str = "magnitude",
    scope: str = "global",
    include_bias: bool = True,
    include_norm: bool = True,
    seed: int = 0,
    structure: str = "unstructured",
    *,
    trajectory: Mapping[str, Any] | None = None,
    score_inputs: torch.Tensor | None = None,
    train_inputs: torch.Tensor | Callable[[], torch.Tensor] | None = None,
    example_inputs: torch.Tensor | None = None,
    **options: Any,
) -> PruningFamily:
    """Score the pool of ``model`` with ``criterion`` and rank once into a :class:`PruningFamily`.

    ``options``: the criterion's own keyword arguments (``eps`` for mu; ``batch_size`` for sipp,
    plus ``delta_failure`` for sipp_hybrid). ``trajectory``: training statistics for M&U;
    ``score_inputs`` (a batch) or ``train_inputs`` (the training set, a seeded batch is drawn):
    *training* inputs for data-informed criteria (SiPP) — never calibration or test data. The
    family's ``score_info`` says where such a batch came from.

    ``structure="channel"``: whole output channels / units (:class:`~.structured.ChannelFamily`),
    criteria l1, l2, activation (option ``batch_size``: training inputs scored), random;
    ``example_inputs`` (a batch of the model's input shape; only the shape matters) is then
    needed to trace the coupled layers.
    """
    if structure == "channel":
        return _channel_family(model, criterion, scope, include_bias, include_norm, seed, score_inputs,
                               train_inputs, example_inputs, options)
    if structure != "unstructured":
        raise OptionError("structure", structure, ", ".join(STRUCTURES))
    if criterion not in ALL_CRITERIA:
        raise OptionError("criterion", criterion, ", ".join(ALL_CRITERIA))
    allowed = criterion_options(criterion)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"criterion {criterion!r} has no option {unknown[0]!r}; its options: {', '.join(allowed) or 'none'}")
    pool = prunable_parameters(model, include_bias=include_bias, include_norm=include_norm)
    ctx = ScoreContext(seed=seed, trajectory=dict(trajectory or {}), score_inputs=score_inputs, train_inputs=train_inputs)
    if criterion in FAMILIES:
        family = FAMILIES[criterion](model, pool, ctx, scope, **options)
    else:
        family = PruningFamily.from_scores(CRITERIA[criterion](model, pool, ctx, **options), scope=scope, criterion=criterion)
    family.score_info = ctx.info or None
    family.config = {"criterion": criterion, "scope": scope, "include_bias": include_bias,
                     "include_norm": include_norm, "seed": seed, "structure": structure, **options}
    if trajectory:
        from ..integrity import state_dict_checksum

        family.trajectory_checksum = state_dict_checksum(dict(trajectory))
    return family


def _channel_family(
    model: nn.Module, criterion: str, scope: str, include_bias: bool, include_norm: bool, seed: int,
    score_inputs: torch.Tensor | None, train_inputs: Any, example_inputs: torch.Tensor | None,
    options: Mapping[str, Any],
) -> Any:
    from .structured import ChannelFamily

    criterion = CHANNEL_ALIASES.get(criterion, criterion)
    if criterion not in CHANNEL_OPTIONS:
        raise ValueError(f"unknown criterion {criterion!r} for structure='channel'; allowed: {', '.join(CHANNEL_OPTIONS)}")
    if not (include_bias and include_norm):
        raise ValueError("structure='channel' removes whole units, biases and BatchNorm included: "
                         "include_bias and include_norm must be true")
    allowed = set(inspect.signature(CHANNEL_OPTIONS[criterion]).parameters)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"channel criterion {criterion!r} has no option {unknown[0]!r}; its options: "
                         f"{', '.join(allowed) or 'none'}")
    if example_inputs is None:
        raise ValueError("structure='channel' needs example_inputs: a batch of the model's input shape")
    ctx = ScoreContext(seed=seed, score_inputs=score_inputs, train_inputs=train_inputs)
    batch = ctx.training_batch(int(options.get("batch_size", 256))) if criterion == "activation" else None
    protected = list(options.get("protected_layers", ()))
    missing = sorted(set(protected) - {n for n, _ in model.named_modules()})
    if missing:
        raise ValueError(f"protected_layers names {missing[0]!r}, which is not a module of this model")
    family = ChannelFamily(model, torch.zeros_like(example_inputs[:2]), criterion=criterion, scope=scope, seed=seed,
                           score_inputs=batch, protected_layers=protected, round_to=options.get("round_to", 1))
    family.score_info = ctx.info or None
    family.config = {**family.config, "include_bias": True, "include_norm": True, **options}
    return family


from .quantized import QuantizedFamily, quantize_linear  # noqa: E402  (after build_family: no cycle)
from .spec import FamilySpec  # noqa: E402

__all__ = [
    "FAMILY_FORMAT", "Family", "FamilySpec", "QuantizedFamily", "check_family", "quantize_linear", "requires_module",
    "ALL_CRITERIA", "CHANNEL_OPTIONS", "CRITERIA", "FAMILIES", "STRUCTURES", "FAMILY_KEYS", "HybridFamily", "NEEDS_SCORE_INPUTS", "SCOPES",
    "PruningFamily", "ScoreContext", "build_family", "check_family_fits", "check_pruning_options", "criterion_options",
    "magnitude_scores", "mu_scores", "n_pruned", "prunable_parameters", "random_scores", "sipp_batch_size",
    "sipp_scores",
]
