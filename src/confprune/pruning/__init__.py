"""Pruning: criteria (scores) and the nested mask family built from them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from .masks import SCOPES, PruningFamily, n_pruned, prunable_parameters
from .scores import CRITERIA, ScoreContext, magnitude_scores, random_scores


def build_family(
    model: nn.Module,
    criterion: str = "magnitude",
    scope: str = "global",
    include_bias: bool = True,
    include_norm: bool = True,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    extras: Mapping[str, Any] | None = None,
) -> PruningFamily:
    """Score the pool of ``model`` with ``criterion`` and rank once into a :class:`PruningFamily`."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown pruning.criterion={criterion!r}; allowed: {', '.join(CRITERIA)}")
    pool = prunable_parameters(model, include_bias=include_bias, include_norm=include_norm)
    ctx = ScoreContext(seed=seed, options=dict(options or {}), extras=dict(extras or {}))
    scores = CRITERIA[criterion](model, pool, ctx)
    return PruningFamily.from_scores(scores, scope=scope, criterion=criterion)


__all__ = [
    "CRITERIA", "SCOPES", "PruningFamily", "ScoreContext", "build_family", "magnitude_scores",
    "n_pruned", "prunable_parameters", "random_scores",
]
