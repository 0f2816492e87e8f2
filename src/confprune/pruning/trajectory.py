"""Running statistics of each weight over its training trajectory (the M&U "pseudo bootstrap").

Welford's algorithm, updated after every optimizer step (or once per epoch) inside the last K
epochs: memory is twice the parameters (a running mean and M2 per entry), no trajectory is stored.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

PREFIX_MEAN, PREFIX_M2 = "mean/", "m2/"


class WelfordTracker:
    def __init__(self, model: nn.Module) -> None:
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.mean = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in self.params.items()}
        self.m2 = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in self.params.items()}
        self.count = 0

    @torch.no_grad()
    def update(self) -> None:
        self.count += 1
        for n, p in self.params.items():
            w = p.detach().float()
            delta = w - self.mean[n]
            self.mean[n] += delta / self.count
            self.m2[n] += delta * (w - self.mean[n])

    def state(self) -> dict[str, torch.Tensor]:
        out = {PREFIX_MEAN + n: t.clone() for n, t in self.mean.items()}
        out.update({PREFIX_M2 + n: t.clone() for n, t in self.m2.items()})
        out["count"] = torch.tensor(self.count)
        return out


def trajectory_std(state: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    """Sample standard deviation of parameter ``name`` over the tracked steps."""
    count = int(state["count"])
    if count < 2:
        raise ValueError(f"the weight trajectory has {count} tracked step(s); at least 2 are needed for a std")
    return torch.sqrt(state[PREFIX_M2 + name].clamp_min(0) / (count - 1))
