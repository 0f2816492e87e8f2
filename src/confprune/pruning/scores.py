"""Pruning criteria: functions from a model (and context) to per-parameter importance scores.

A criterion never looks at calibration or test data: the guarantee needs the pruning family to
be fixed before calibration (method.md §8). New criteria register here and plug into the sweep
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class ScoreContext:
    """What a criterion may use besides the weights: a seed, options, training-time extras."""

    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)  # e.g. training statistics


Criterion = Callable[[nn.Module, Mapping[str, torch.Tensor], ScoreContext], dict[str, torch.Tensor]]


def magnitude_scores(model: nn.Module, pool: Mapping[str, torch.Tensor], ctx: ScoreContext) -> dict[str, torch.Tensor]:
    """|w|: global magnitude pruning (the paper's criterion)."""
    return {n: p.detach().abs() for n, p in pool.items()}


def random_scores(model: nn.Module, pool: Mapping[str, torch.Tensor], ctx: ScoreContext) -> dict[str, torch.Tensor]:
    """Uniform random scores from a seeded generator: the baseline any criterion must beat."""
    gen = torch.Generator().manual_seed(int(ctx.seed))
    return {n: torch.rand(p.shape, generator=gen, dtype=torch.float64) for n, p in pool.items()}


CRITERIA: dict[str, Criterion] = {
    "magnitude": magnitude_scores,
    "random": random_scores,
}
