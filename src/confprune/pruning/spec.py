"""One pruning family as a declared, checked value: a ``pruning`` config *is* one knob.

:class:`FamilySpec` owns the defaults and the start-up check of a family: the Hydra ``pruning``
group, every entry of ``knobs.families`` (Pareto testing) and :func:`confprune.certify`'s
arguments all become a spec through :meth:`FamilySpec.from_config`, so a knob is checked exactly
like ``pruning`` (before training), and every field exists for single-family runs too. A new
knob field is one field here plus its YAML.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class FamilySpec:
    """criterion, structure, scope, pool (bias, norm), seed, int8 quantisation, and the
    criterion's own ``options`` (``eps`` for M&U, ``batch_size`` for SiPP, …)."""

    criterion: str = "magnitude"
    structure: str = "unstructured"  # unstructured | channel
    scope: str = "global"  # global | layerwise
    include_bias: bool = True
    include_norm: bool = True  # the paper code's pool: every trainable parameter
    seed: int = 0  # the random criterion's seed and the data-informed criteria's batch draw
    quantize: bool = False  # int8 dynamic quantisation of the pruned model's Linear layers
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "options")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], group: str = "pruning") -> FamilySpec:
        """Check a config mapping (raises :class:`ConfigError` naming ``<group>.<key>``) and
        return its spec; keys that are not spec fields are the criterion's options."""
        from . import check_pruning_options

        if not isinstance(config, Mapping):
            raise ConfigError(group, config, f"a mapping with {', '.join(cls.field_names())} and criterion options")
        quantize = config.get("quantize", False)
        if not isinstance(quantize, bool):
            raise ConfigError(f"{group}.quantize", quantize, "true or false")
        for key in ("include_bias", "include_norm"):
            if not isinstance(config.get(key, True), bool):
                raise ConfigError(f"{group}.{key}", config[key], "true or false")
        seed = config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ConfigError(f"{group}.seed", seed, "an integer in [0, 2^32)")
        check_pruning_options({k: v for k, v in config.items() if k != "quantize"}, group=group)
        own = {k: config[k] for k in cls.field_names() if k in config}
        return cls(**own, options={k: v for k, v in config.items() if k not in own})

    def knob(self, entry: Mapping[str, Any], group: str) -> FamilySpec:
        """A knob declared on top of this spec: ``entry``'s keys win; this spec's fields (not its
        criterion options) fill the rest, except the pool flags for a channel knob (a removed
        unit always takes its bias and BatchNorm with it)."""
        if not isinstance(entry, Mapping):
            raise ConfigError(group, entry, f"a mapping with {', '.join(self.field_names())} and criterion options")
        skip = {"include_bias", "include_norm"} if entry.get("structure") == "channel" else set()
        inherited = {k: getattr(self, k) for k in self.field_names() if k not in skip}
        return FamilySpec.from_config({**inherited, **entry}, group=group)

    @property
    def config(self) -> dict[str, Any]:
        """The flat mapping the spec came from (every field, options on top): what a cache key,
        a certificate and :meth:`from_config` read."""
        return {**{k: getattr(self, k) for k in self.field_names()}, **dict(self.options)}

    @property
    def label(self) -> str:
        return (f"{self.criterion}/{self.structure}{'/' + self.scope if self.scope != 'global' else ''}"
                + ("+int8" if self.quantize else ""))

    def check_fits(self, model: nn.Module, model_name: str, group: str = "pruning") -> None:
        """On the untrained model: a non-empty pool the criterion can score."""
        from . import check_family_fits

        check_family_fits(model, self.config, model_name, group=group)

    def check_training(self, trajectory: Any, group: str = "pruning") -> None:
        """What the criterion needs from training (M&U: the weight trajectory)."""
        if self.criterion == "mu" and not trajectory.enabled:
            raise ConfigError("trainer.trajectory.enabled", False,
                              f"true with {group}.criterion=mu (M&U needs the weight trajectory)")
        if self.criterion == "mu" and self.options.get("sigma") == "updates" and not trajectory.track_updates:
            raise ConfigError("trainer.trajectory.track_updates", False,
                              f"true with {group}.sigma=updates (the σ̂ of the updates is tracked during training)")

    def build(self, model: nn.Module, *, trajectory: Mapping[str, torch.Tensor] | None = None,
              score_inputs: torch.Tensor | None = None,
              train_inputs: torch.Tensor | Callable[[], torch.Tensor] | None = None,
              example_inputs: torch.Tensor | None = None) -> Any:
        """Score the pool of ``model`` and rank once: the family (a :class:`~.family.Family`)."""
        from . import build_family
        from .quantized import QuantizedFamily

        family = build_family(model, **{k: v for k, v in self.config.items() if k != "quantize"},
                              trajectory=trajectory, score_inputs=score_inputs, train_inputs=train_inputs,
                              example_inputs=example_inputs)
        return QuantizedFamily(family) if self.quantize else family


__all__ = ["FamilySpec"]
