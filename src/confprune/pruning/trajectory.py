"""Running statistics of each weight over its training trajectory (the M&U "pseudo bootstrap").

Welford's algorithm, updated after every optimizer step (or once per epoch) inside the last K
epochs: memory is twice the parameters (a running mean and M2 per entry), no trajectory is stored.
With ``track_updates`` the tracker also keeps Welford statistics of the per-step *updates*
Δw_t = w_t − w_{t−1} between consecutive tracked steps (three more copies of the parameters: the
previous weights, a mean and an M2), for the M&U variant that divides by their spread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

PREFIX_MEAN, PREFIX_M2 = "mean/", "m2/"
# Statistics of the updates Δw (only in checkpoints trained with track_updates=True).
PREFIX_UPDATE_MEAN, PREFIX_UPDATE_M2, UPDATE_COUNT = "update_mean/", "update_m2/", "update_count"


def _welford_step(mean: torch.Tensor, m2: torch.Tensor, x: torch.Tensor, count: int) -> None:
    """Add observation number ``count`` (1-based) to a running mean and M2, in place."""
    delta = x - mean
    mean += delta / count
    m2 += delta * (x - mean)


class WelfordTracker:
    """Welford mean/M2 of every trainable parameter over the tracked steps (and, with
    ``track_updates``, of its per-step updates). Call :meth:`update` after each tracked step."""

    def __init__(self, model: nn.Module, *, track_updates: bool = False) -> None:
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.mean = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in self.params.items()}
        self.m2 = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in self.params.items()}
        self.count = 0
        self.track_updates = bool(track_updates)
        self.previous: dict[str, torch.Tensor] = {}
        self.update_mean = {n: torch.zeros_like(t) for n, t in self.mean.items()} if self.track_updates else {}
        self.update_m2 = {n: torch.zeros_like(t) for n, t in self.mean.items()} if self.track_updates else {}
        self.update_count = 0

    @torch.no_grad()
    def update(self) -> None:
        self.count += 1
        if self.track_updates and self.previous:
            self.update_count += 1
        for n, p in self.params.items():
            w = p.detach().float()
            _welford_step(self.mean[n], self.m2[n], w, self.count)
            if self.track_updates:
                # The first tracked step has no predecessor inside the window: it only sets one.
                if n in self.previous:
                    _welford_step(self.update_mean[n], self.update_m2[n], w - self.previous[n], self.update_count)
                self.previous[n] = w.clone()

    def state(self) -> dict[str, torch.Tensor]:
        """The statistics as a flat dict of tensors (what a checkpoint stores as ``trajectory``)."""
        out = {PREFIX_MEAN + n: t.clone() for n, t in self.mean.items()}
        out.update({PREFIX_M2 + n: t.clone() for n, t in self.m2.items()})
        out["count"] = torch.tensor(self.count)
        if self.track_updates:
            out.update({PREFIX_UPDATE_MEAN + n: t.clone() for n, t in self.update_mean.items()})
            out.update({PREFIX_UPDATE_M2 + n: t.clone() for n, t in self.update_m2.items()})
            out[UPDATE_COUNT] = torch.tensor(self.update_count)
        return out


def trajectory_std(state: Mapping[str, torch.Tensor], name: str,
                   of: Literal["weights", "updates"] = "weights") -> torch.Tensor:
    """Sample standard deviation of parameter ``name`` over the tracked steps (``of="weights"``),
    or of its per-step updates Δw (``of="updates"``; needs a tracker with ``track_updates``)."""
    if of == "weights":
        count, m2 = int(state["count"]), state[PREFIX_M2 + name]
        what = "tracked step(s)"
    elif of == "updates":
        if UPDATE_COUNT not in state:
            raise ValueError(
                "this checkpoint's trajectory has no statistics of the per-step updates: train with "
                "WelfordTracker(model, track_updates=True) (a separately cached model)"
            )
        count, m2 = int(state[UPDATE_COUNT]), state[PREFIX_UPDATE_M2 + name]
        what = "tracked update(s)"
    else:
        raise ValueError(f"of={of!r}: allowed weights, updates")
    if count < 2:
        raise ValueError(f"the weight trajectory has {count} {what}; at least 2 are needed for a std")
    return torch.sqrt(m2.clamp_min(0) / (count - 1))
