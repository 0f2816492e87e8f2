"""Pruning criteria: functions from a model (and context) to per-parameter importance scores.

Higher score = more important = pruned later. A criterion never looks at calibration or test
data: the guarantee needs the pruning family to be fixed before calibration (method.md §8); data-
informed criteria (SiPP) get a batch of *training* images through :class:`ScoreContext`. New
criteria register in ``CRITERIA`` and plug into the sweep unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .trajectory import trajectory_std


@dataclass
class ScoreContext:
    """What a criterion may use besides the weights (its options are its keyword arguments).

    Data-informed criteria read ``score_inputs`` (a batch of *training* inputs) or, when it is not
    given, draw a seeded batch from ``train_inputs`` (a tensor, or a zero-argument function
    returning one, so that the training set is decoded only when needed); they record where the
    batch came from in ``info``. Never calibration or test data.
    """

    seed: int = 0
    trajectory: Mapping[str, torch.Tensor] = field(default_factory=dict)  # M&U statistics
    score_inputs: torch.Tensor | None = None
    train_inputs: torch.Tensor | Callable[[], torch.Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # provenance of data-informed scores

    def training_batch(self, size: int) -> torch.Tensor:
        """The criterion's batch of training inputs: ``score_inputs`` if given, else a seeded draw
        of ``size`` inputs from ``train_inputs`` (kept, so later calls return the same batch)."""
        if self.score_inputs is None:
            if self.train_inputs is None:
                raise ValueError("this criterion needs a batch of training inputs (score_inputs) and none was given")
            source = self.train_inputs() if callable(self.train_inputs) else self.train_inputs
            n = source.shape[0]
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.seed)))[: min(int(size), n)]
            self.score_inputs = source[idx]
            self.info = {"source": "training set", "size": int(idx.numel()), "seed": int(self.seed)}
        elif not self.info:
            self.info = {"source": "given", "size": int(self.score_inputs.shape[0])}
        if "fingerprint" not in self.info:  # a verifier checks it rebuilt the same batch
            from ..integrity import fingerprint

            self.info["fingerprint"] = fingerprint(self.score_inputs, None)
        return self.score_inputs


Criterion = Callable[..., dict[str, torch.Tensor]]  # (model, pool, ctx, **options) -> scores


def magnitude_scores(model: nn.Module, pool: Mapping[str, torch.Tensor], ctx: ScoreContext) -> dict[str, torch.Tensor]:
    """|w|: global magnitude pruning (the paper's criterion)."""
    return {n: p.detach().abs() for n, p in pool.items()}


def random_scores(model: nn.Module, pool: Mapping[str, torch.Tensor], ctx: ScoreContext) -> dict[str, torch.Tensor]:
    """Uniform random scores from a seeded generator: the baseline any criterion must beat."""
    gen = torch.Generator().manual_seed(int(ctx.seed))
    return {n: torch.rand(p.shape, generator=gen, dtype=torch.float64) for n, p in pool.items()}


def mu_scores(
    model: nn.Module, pool: Mapping[str, torch.Tensor], ctx: ScoreContext, *, eps: float = 1e-8,
    eps_rel: float = 0.0, inert_rel: float | None = 0.0, sigma: str = "weights",
) -> dict[str, torch.Tensor]:
    """M&U (ours, after the Wald statistic): |w_T| / (σ̂ + ε), σ̂ the std of the weight over the last
    K epochs of its training trajectory. Invariant to rescaling a layer (and its trajectory) by c.

    The variants below are **ours** (the paper's code is not public). The default prunes *inert*
    weights first (σ̂ = 0 over the tracked window: no gradient moved them, e.g. weights on an
    always-zero input, 34% of the MNIST CNN's pool): the plain reading gives them |w|/ε, the
    largest scores of all, and keeps them to the end although they barely touch the output. In the
    README's study ("M&U variants") this certifies more sparsity than the plain reading and every
    other variant in every cell (0.76 vs 0.42 at label_01 α = 0.03 on the MNIST CNN).
    ``inert_rel=None`` restores the plain reading |w|/(σ̂ + ε).

    Parameters
    ----------
    eps : float
        Absolute ε. With ``inert_rel=None`` a weight that never moves (σ̂ = 0, e.g. on an
        always-zero input) scores |w|/ε, the largest scores of all, and is pruned last.
    eps_rel : float
        ε of each tensor becomes eps + eps_rel × median σ̂ of that tensor (lower median): a floor
        relative to the layer's typical spread, so that σ̂ → 0 no longer dominates the ranking.
        Scale invariant (with eps = 0).
    inert_rel : float or None
        A number r ≥ 0 (default 0): weights with σ̂ ≤ r × median σ̂ of their tensor (r = 0: exactly
        σ̂ = 0) are inert — they did not move over the tracked window — and score 0: pruned first.
        None: off (the plain reading).
    sigma : {"weights", "updates"}
        "weights": σ̂ of the weights over the trajectory. "updates": σ̂ of the per-step updates
        Δw_t = w_t − w_{t−1} (needs a checkpoint trained with ``WelfordTracker(track_updates=True)``).

    Returns
    -------
    dict of tensors, each of the shape of its pool entry, float64 (higher = kept longer).
    """
    from ..errors import OptionError

    if not ctx.trajectory:
        raise ValueError(
            "criterion='mu' needs the weight-trajectory statistics of training (trajectory=...: the state "
            "of a confprune.pruning.trajectory.WelfordTracker updated after every optimizer step), and none "
            "were given"
        )
    if sigma not in ("weights", "updates"):
        raise OptionError("sigma", sigma, "weights, updates")
    if not float(eps_rel) >= 0:
        raise OptionError("eps_rel", eps_rel, "a number ≥ 0")
    if inert_rel is not None and not float(inert_rel) >= 0:
        raise OptionError("inert_rel", inert_rel, "null (off) or a number ≥ 0")
    scores = {}
    for n, p in pool.items():
        sd = trajectory_std(ctx.trajectory, n, of=sigma).double()  # type: ignore[arg-type]
        typical = sd.flatten().median() if (eps_rel or inert_rel is not None) else sd.new_zeros(())
        score = p.detach().abs().double() / (sd + float(eps) + float(eps_rel) * typical)
        if inert_rel is not None:
            score = torch.where(sd <= float(inert_rel) * typical, torch.zeros_like(score), score)
        scores[n] = score
    return scores


# ---------------------------------------------------------------------------------------------
# SiPP (Baykal, Liebenwein et al.): deterministic empirical sensitivities


def _nonneg_copies(a: torch.Tensor) -> torch.Tensor:
    """Inputs with negative entries become two non-negative copies, max(a, 0) and max(−a, 0)."""
    if bool((a < 0).any()):
        return torch.cat([a.clamp_min(0), (-a).clamp_min(0)])
    return a


def _sensitivity(w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """max over samples of w_ij·a_j / Σ_{k: sign(w_ik)=sign(w_ij)} w_ik·a_k.

    w: (I, J); a: (B, J, P) non-negative activations (P patches; mean over patches). A zero
    denominator contributes 0.
    """
    out = torch.zeros_like(w, dtype=torch.float64)
    wp, wn = w.clamp_min(0).double(), w.clamp_max(0).double()
    pos = (w > 0).double()
    for chunk in torch.split(a.double(), max(1, 2**22 // max(1, w.numel() * a.shape[2])), dim=0):
        den_p = torch.einsum("ij,bjp->bip", wp, chunk)  # (B, I, P), ≥ 0
        den_n = torch.einsum("ij,bjp->bip", wn, chunk)  # ≤ 0
        inv_p = torch.where(den_p > 0, 1.0 / den_p, torch.zeros_like(den_p))
        inv_n = torch.where(den_n < 0, 1.0 / den_n, torch.zeros_like(den_n))
        # ratio_bijp = w_ij a_bjp / den_{b,i,p}^{sign(w_ij)}; mean over p, max over b
        r = torch.einsum("ij,bjp,bip->bij", w.double() * pos, chunk, inv_p)
        r = r + torch.einsum("ij,bjp,bip->bij", w.double() * (1 - pos), chunk, inv_n)
        out = torch.maximum(out, r.amax(0) / chunk.shape[2])
    return out


def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inputs of every Linear and Conv2d module for a batch, captured with forward hooks."""
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, name=name: captured.__setitem__(name, inp[0].detach()))
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return captured


def sipp_patches(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Patches per sample of each Linear (1) and Conv2d weight, for the hybrid error rule."""
    modules = dict(model.named_modules())
    out = {}
    for name, a in layer_inputs(model, x).items():
        mod = modules[name]
        if isinstance(mod, nn.Conv2d):
            out[f"{name}.weight"] = F.unfold(a[:1], mod.kernel_size, dilation=mod.dilation, padding=mod.padding, stride=mod.stride).shape[-1]
        else:
            out[f"{name}.weight"] = 1
    return out


def sipp_scores(
    model: nn.Module, pool: Mapping[str, torch.Tensor], ctx: ScoreContext, *, batch_size: int | None = None
) -> dict[str, torch.Tensor]:
    """Deterministic SiPP: empirical sensitivities of Linear/Conv2d weights over a training batch
    of ``batch_size`` inputs (None: the paper code's |S|, :func:`sipp_batch_size`).

    Biases and other parameters have no sensitivity: they must be excluded from the pool
    (pruning=sipp sets include_bias=false, include_norm=false).
    """
    modules = dict(model.named_modules())
    for name in pool:  # checked before the training batch is drawn (and possibly decoded)
        mod_name, _, pname = name.rpartition(".")
        if pname != "weight" or not isinstance(modules.get(mod_name), (nn.Linear, nn.Conv2d)):
            raise ValueError(
                f"SiPP defines sensitivities for Linear/Conv2d weights only, not {name!r}: "
                "use include_bias=False and include_norm=False"
            )
    inputs = layer_inputs(model, ctx.training_batch(batch_size or sipp_batch_size(model)))
    scores: dict[str, torch.Tensor] = {}
    for name, w in pool.items():
        mod_name = name.rpartition(".")[0]
        mod, a = modules[mod_name], inputs[mod_name]
        if isinstance(mod, nn.Linear):
            acts = _nonneg_copies(a.reshape(-1, a.shape[-1]))[:, :, None]  # (B, J, 1)
            scores[name] = _sensitivity(w.detach().reshape(w.shape[0], -1), acts).reshape(w.shape)
        else:
            patches = F.unfold(a, mod.kernel_size, dilation=mod.dilation, padding=mod.padding, stride=mod.stride)
            if mod.groups != 1:
                raise ValueError(f"SiPP: grouped convolutions are not supported ({name})")
            acts = _nonneg_copies(patches)  # (B, C·kh·kw, P)
            scores[name] = _sensitivity(w.detach().reshape(w.shape[0], -1), acts).reshape(w.shape)
    return scores


def sipp_batch_size(model: nn.Module, delta_s: float = 1e-16) -> int:
    """|S| = ⌈3·log(8·η*·η/δ_s)⌉ (the paper code's formula; η = total output units of the
    Linear/Conv2d layers, η* = the largest layer's)."""
    units = [m.out_features if isinstance(m, nn.Linear) else m.out_channels
             for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return int(math.ceil(3 * math.log(8 * max(units) * sum(units) / delta_s)))


CRITERIA: dict[str, Criterion] = {
    "magnitude": magnitude_scores,
    "random": random_scores,
    "mu": mu_scores,
    "sipp": sipp_scores,
}
