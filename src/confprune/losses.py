"""Per-sample losses L_i(λ) = ℓ(f(x_i), f_λ(x_i), y_i) ∈ [0, 1] (method.md §7).

Each loss maps (dense output, pruned output, target) for a batch to a 1-D tensor of per-sample
losses. ``binary`` says whether every value is 0 or 1 (so the binomial p-value applies); ``aux``
optionally returns per-sample side statistics reported beside the risk (e.g. abstention).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import OptionError

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
    params: dict[str, Any] = field(default_factory=dict)  # its options, e.g. {"tau": 0.9}, for the certificate
    reads_dense: bool = True  # False: ignores the dense output (a verifier need not rebuild it)

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


def _cents(activations: torch.Tensor) -> torch.Tensor:
    from .models.crepe import decode_cents

    return decode_cents(activations)


def _cents_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1200.0:
        raise OptionError("threshold", threshold, "a number of cents in (0, 1200]")
    return float(threshold)


def _pitch_error(threshold: float = 50.0) -> tuple[LossFn, AuxFn | None]:
    """threshold: cents. 1{voiced and |cents(pruned) − cents(label)| > threshold}: raw pitch
    accuracy's complement on voiced frames (label NaN = unvoiced: loss 0). Ours: the risk is over
    all frames, voiced or not, so it is P(voiced and wrong)."""
    th = _cents_threshold(threshold)

    def fn(dense: torch.Tensor, pruned: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = target.double()
        wrong = (_cents(pruned) - y).abs() > th
        return (wrong & ~torch.isnan(y)).to(torch.float32)

    return fn, None


def _pitch_disagreement(threshold: float = 50.0) -> tuple[LossFn, AuxFn | None]:
    """threshold: cents. 1{|cents(pruned) − cents(dense)| > threshold} on every frame (no labels)."""
    th = _cents_threshold(threshold)

    def fn(dense: torch.Tensor, pruned: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((_cents(pruned) - _cents(dense)).abs() > th).to(torch.float32)

    return fn, None


def _fixed(fn: LossFn) -> Callable[[], tuple[LossFn, AuxFn | None]]:
    return lambda: (fn, None)


@dataclass(frozen=True)
class LossSpec:
    """A registered loss and its facts: ``build``'s keyword arguments are the loss's options (a
    ``loss`` config's keys besides ``name``); ``binary``: every value is 0 or 1 (the binomial
    p-value applies); ``labeled``: reads the target; ``reads_dense``: reads the dense model's output
    (a verifier must then rebuild the dense model); ``task``: the outputs it understands."""

    name: str
    binary: bool
    labeled: bool
    reads_dense: bool
    build: Callable[..., tuple[LossFn, AuxFn | None]]
    task: str = "classification"

    def make(self, **options: Any) -> Loss:
        try:
            bound = inspect.signature(self.build).bind(**options)
        except TypeError:
            allowed = ", ".join(inspect.signature(self.build).parameters) or "none"
            raise OptionError(next(iter(options)), options, f"the options of loss {self.name!r}: {allowed}") from None
        bound.apply_defaults()  # the certificate records every option, defaults included
        fn, aux = self.build(**bound.arguments)
        return Loss(self.name, fn, self.binary, self.labeled, self.task, aux, dict(bound.arguments), self.reads_dense)


def _threshold(tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 < tau < 1.0:
        raise OptionError("tau", tau, "a number in the open interval (0, 1)")
    return float(tau)


def _selective(tau: float = 0.9) -> tuple[LossFn, AuxFn | None]:
    """tau: abstain when the pruned model's max softmax is below it."""
    return selective(_threshold(tau))


def _seg_fail(tau: float = 0.8) -> tuple[LossFn, AuxFn | None]:
    """tau: a mask fails when its IoU with the dense mask is below it."""
    return seg_fail(_threshold(tau))


LOSSES: dict[str, LossSpec] = {
    "label_01": LossSpec("label_01", binary=True, labeled=True, reads_dense=False, build=_fixed(label_01)),
    "disagreement": LossSpec("disagreement", binary=True, labeled=False, reads_dense=True, build=_fixed(disagreement)),
    "selective": LossSpec("selective", binary=True, labeled=True, reads_dense=False, build=_selective),
    "tv_distance": LossSpec("tv_distance", binary=False, labeled=False, reads_dense=True, build=_fixed(tv_distance)),
    "seg_disagreement": LossSpec("seg_disagreement", binary=False, labeled=False, reads_dense=True,
                                 build=_fixed(seg_disagreement), task="segmentation"),
    "seg_miss": LossSpec("seg_miss", binary=False, labeled=True, reads_dense=False, build=_fixed(seg_miss),
                         task="segmentation"),
    "seg_fail": LossSpec("seg_fail", binary=True, labeled=False, reads_dense=True, build=_seg_fail,
                         task="segmentation"),
    "pitch_error": LossSpec("pitch_error", binary=True, labeled=True, reads_dense=False, build=_pitch_error,
                            task="pitch"),
    "pitch_disagreement": LossSpec("pitch_disagreement", binary=True, labeled=False, reads_dense=True,
                                   build=_pitch_disagreement, task="pitch"),
}


def make_loss(name: str, **options: Any) -> Loss:
    """The loss registered under ``name`` with its options (e.g. ``make_loss("selective", tau=0.8)``)."""
    if name not in LOSSES:
        raise OptionError("loss", name, ", ".join(LOSSES))
    return LOSSES[name].make(**options)
