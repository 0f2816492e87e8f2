"""Per-sample losses L_i(λ) = ℓ(f(x_i), f_λ(x_i), y_i) ∈ [0, 1] (method.md §7).

Each loss maps (dense output, pruned output, target) for a batch to a 1-D tensor of per-sample
losses. ``binary`` says whether every value is 0 or 1 (so the binomial p-value applies); ``aux``
optionally returns per-sample side statistics reported beside the risk (e.g. abstention).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
AuxFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Loss:
    name: str
    fn: LossFn
    binary: bool
    labeled: bool
    task: str = "classification"
    aux: AuxFn | None = field(default=None)
    params: dict[str, float] = field(default_factory=dict)  # e.g. {"tau": 0.9}, for the certificate

    def __call__(self, dense: torch.Tensor, pruned: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(dense, pruned, target)


def label_01(dense: torch.Tensor, pruned: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pruned.argmax(dim=1) != target).to(torch.float32)


def disagreement(dense: torch.Tensor, pruned: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pruned.argmax(dim=1) != dense.argmax(dim=1)).to(torch.float32)


def tv_distance(dense: torch.Tensor, pruned: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Ours: total-variation distance ½·Σ|softmax(f) − softmax(f_λ)| ∈ [0, 1] (unlabeled, fractional)."""
    diff = torch.softmax(dense.double(), dim=1) - torch.softmax(pruned.double(), dim=1)
    return (0.5 * diff.abs().sum(dim=1)).clamp(0.0, 1.0).to(torch.float32)


def selective(tau: float) -> tuple[LossFn, AuxFn]:
    """Ours: abstain when the pruned max softmax < τ; loss = 1{answered and wrong}."""

    def answered(pruned: torch.Tensor) -> torch.Tensor:
        return torch.softmax(pruned, dim=1).amax(dim=1) >= tau

    def fn(dense: torch.Tensor, pruned: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (answered(pruned) & (pruned.argmax(dim=1) != target)).to(torch.float32)

    def aux(dense: torch.Tensor, pruned: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"abstention": (~answered(pruned)).to(torch.float32)}

    return fn, aux


def _masks(logits: torch.Tensor) -> torch.Tensor:
    return (logits > 0).flatten(1)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample IoU of two boolean masks (B, P); two empty masks have IoU 1."""
    inter = (a & b).sum(1).double()
    union = (a | b).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def seg_disagreement(dense: torch.Tensor, pruned: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Ours: 1 − IoU(pruned mask, dense mask) ∈ [0, 1]; two empty masks → 0 (unlabeled)."""
    return (1.0 - mask_iou(_masks(pruned), _masks(dense))).float()


def seg_miss(dense: torch.Tensor, pruned: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Ours: fraction of ground-truth polyp pixels the pruned mask misses (0 without polyp)."""
    gt = (target > 0.5).flatten(1)
    missed = (gt & ~_masks(pruned)).sum(1).double()
    total = gt.sum(1).double()
    return torch.where(total > 0, missed / total.clamp_min(1), torch.zeros_like(total)).float()


def seg_fail(tau: float) -> tuple[LossFn, AuxFn | None]:
    """Ours: 1{IoU(pruned mask, dense mask) < τ} (binary, so the binomial p-value applies)."""

    def fn(dense: torch.Tensor, pruned: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (mask_iou(_masks(pruned), _masks(dense)) < tau).float()

    return fn, None


def _fixed(fn: LossFn) -> Callable[[float], tuple[LossFn, AuxFn | None]]:
    return lambda tau: (fn, None)


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its properties, and how to build it for a threshold τ."""

    name: str
    binary: bool
    labeled: bool
    build: Callable[[float], tuple[LossFn, AuxFn | None]]
    task: str = "classification"

    uses_tau: bool = False

    def make(self, tau: float = 0.5) -> Loss:
        fn, aux = self.build(tau)
        return Loss(self.name, fn, self.binary, self.labeled, self.task, aux, {"tau": tau} if self.uses_tau else {})


LOSSES: dict[str, LossSpec] = {
    "label_01": LossSpec("label_01", binary=True, labeled=True, build=_fixed(label_01)),
    "disagreement": LossSpec("disagreement", binary=True, labeled=False, build=_fixed(disagreement)),
    "selective": LossSpec("selective", binary=True, labeled=True, build=selective, uses_tau=True),
    "tv_distance": LossSpec("tv_distance", binary=False, labeled=False, build=_fixed(tv_distance)),
    "seg_disagreement": LossSpec("seg_disagreement", binary=False, labeled=False, build=_fixed(seg_disagreement), task="segmentation"),
    "seg_miss": LossSpec("seg_miss", binary=False, labeled=True, build=_fixed(seg_miss), task="segmentation"),
    "seg_fail": LossSpec("seg_fail", binary=True, labeled=False, build=seg_fail, task="segmentation", uses_tau=True),
}


def make_loss(name: str, tau: float = 0.5) -> Loss:
    """The loss registered under ``name``, with its threshold τ where it has one."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss.name={name!r}; allowed: {', '.join(LOSSES)}")
    return LOSSES[name].make(tau)
