"""Pruning: criteria (scores) and the nested mask family built from them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

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

#: criteria that read a batch of training inputs (data-informed)
NEEDS_SCORE_INPUTS = frozenset({"sipp", "sipp_hybrid"})
#: every criterion a config may name (sipp_hybrid builds on the sipp scores)
ALL_CRITERIA = (*CRITERIA, "sipp_hybrid")


def score_batch(train_inputs: Any, size: int, seed: int) -> tuple[Any, Any]:
    """A seeded batch of *training* inputs for data-informed criteria: (inputs, indices)."""
    import torch

    n = train_inputs.shape[0]
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[: min(size, n)]
    return train_inputs[idx], idx


def build_family(
    model: nn.Module,
    criterion: str = "magnitude",
    scope: str = "global",
    include_bias: bool = True,
    include_norm: bool = True,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    trajectory: Mapping[str, Any] | None = None,
    score_inputs: Any = None,
) -> PruningFamily:
    """Score the pool of ``model`` with ``criterion`` and rank once into a :class:`PruningFamily`.

    ``trajectory``: training statistics for M&U; ``score_inputs``: a batch of *training* inputs
    for data-informed criteria (SiPP) — never calibration or test data.
    """
    if criterion not in ALL_CRITERIA:
        raise ValueError(f"unknown pruning.criterion={criterion!r}; allowed: {', '.join(ALL_CRITERIA)}")
    pool = prunable_parameters(model, include_bias=include_bias, include_norm=include_norm)
    ctx = ScoreContext(seed=seed, options=dict(options or {}), trajectory=dict(trajectory or {}), score_inputs=score_inputs)
    if criterion == "sipp_hybrid":
        sens = CRITERIA["sipp"](model, pool, ctx)
        base = PruningFamily.from_scores(sens, scope=scope, criterion="sipp")
        patches = sipp_patches(model, score_inputs[:1])
        delta_f = float(dict(options or {}).get("delta_failure", 1e-16))
        return HybridFamily(base, sens, pool, patches, seed=seed, delta_failure=delta_f)
    scores = CRITERIA[criterion](model, pool, ctx)
    return PruningFamily.from_scores(scores, scope=scope, criterion=criterion)


__all__ = [
    "ALL_CRITERIA", "HybridFamily", "NEEDS_SCORE_INPUTS", "score_batch",
    "CRITERIA", "SCOPES", "PruningFamily", "ScoreContext", "build_family", "magnitude_scores",
    "mu_scores", "n_pruned", "prunable_parameters", "random_scores", "sipp_batch_size", "sipp_scores",
]
