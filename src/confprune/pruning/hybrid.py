"""SiPP hybrid: per (neuron, sign) group, importance sampling with reweighting or a deterministic
top-m cut, whichever has the smaller theoretical error (the rule of the SiPP reference code).

For each λ the budget m of a group is the number of its weights that deterministic global SiPP
keeps at λ (ours: the reference code allocates budgets with a convex program). Then
- deterministic error: the sensitivity mass of the group outside its top m (C = 1),
- sampling error: ½(‖(c/3m, sqrt(2c/m))‖₂ + c/3m) with c = S·2·C·log(8·(P+1)·k/δ_f), S the group's
  total sensitivity, P the patches per sample, k the kernel size, δ_f = 1e-16 (ours),
and sampling is used where its error is smaller: m draws with replacement with p_j = s_j/S, each
kept weight multiplied by count_j/(m·p_j). Draws come from one seeded uniform stream per group, so
the family is fixed before calibration and the samples for a smaller m are a prefix of those for
a larger one (kept sets are nested in λ). Weights are reweighted, not only masked: ``apply``
returns the exact weights the sweep evaluates and the export writes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from .masks import PruningFamily


def sampling_error(m: torch.Tensor, total_sens: torch.Tensor, log_term: float) -> torch.Tensor:
    coeff = total_sens * 2.0 * log_term
    m = m.clamp_min(1).double()
    t1 = coeff / (3.0 * m)
    t2 = torch.sqrt(2.0 * coeff / m)
    return 0.5 * (torch.sqrt(t1**2 + t2**2) + t1)


def sample_group(p: torch.Tensor, m: int, uniforms: torch.Tensor) -> torch.Tensor:
    """Multipliers for one group: m draws with replacement from p (inverse CDF of ``uniforms``),
    each drawn entry multiplied by count/(m·p) (unbiased: E[factor] = 1 where p > 0), others 0."""
    cdf = torch.cumsum(p, 0)
    draws = torch.searchsorted(cdf, uniforms[:m] * cdf[-1]).clamp_max(p.numel() - 1)
    counts = torch.bincount(draws, minlength=p.numel()).double()
    factor = torch.zeros_like(p, dtype=torch.float64)
    hit = counts > 0
    factor[hit] = counts[hit] / (m * p[hit])
    return factor


class HybridFamily(PruningFamily):
    """Deterministic SiPP ranks plus per-λ reweighting factors for the sampled groups."""

    def __init__(self, base: PruningFamily, sens: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor],
                 patches: Mapping[str, int], seed: int = 0, delta_failure: float = 1e-16):
        super().__init__(base.ranks, base.groups, criterion="sipp_hybrid", scope=base.scope)
        self.sens = {n: s.double() for n, s in sens.items()}
        self.signs = {n: torch.sign(w.detach()) for n, w in weights.items()}
        self.shapes = {n: w.shape for n, w in weights.items()}
        self.log_terms = {
            n: math.log(8.0 * (patches[n] + 1) * (w[0, 0].numel() if w.dim() > 2 else 1) / delta_failure)
            for n, w in weights.items()
        }
        gen = torch.Generator().manual_seed(int(seed))
        # one uniform stream per (row, side): shape (I, 2, J)
        self.streams = {n: torch.rand((s.shape[0], 2, s[0].numel()), generator=gen, dtype=torch.float64) for n, s in self.sens.items()}
        self._cache: dict[float, dict[str, torch.Tensor]] = {}
        self.sampled_fraction: dict[float, float] = {}

    def factors(self, lam: float) -> dict[str, torch.Tensor]:
        """Multipliers for each pool tensor at λ: 0 pruned, 1 kept deterministically, count/(m·p)
        for sampled weights."""
        if lam in self._cache:
            return self._cache[lam]
        keep = super().masks(lam)
        out: dict[str, torch.Tensor] = {}
        n_groups = n_sampled = 0
        for name, s in self.sens.items():
            rows = s.shape[0]
            s2 = s.reshape(rows, -1)
            keep2 = keep[name].reshape(rows, -1)
            sign2 = self.signs[name].reshape(rows, -1)
            factor = keep2.double().clone()
            for side, sgn in enumerate((1.0, -1.0)):
                in_side = sign2 == sgn
                sens_side = torch.where(in_side, s2, torch.zeros_like(s2))
                total = sens_side.sum(1)
                m = (keep2 & in_side).sum(1)
                err_det = total - torch.where(keep2 & in_side, s2, torch.zeros_like(s2)).sum(1)
                err_rand = sampling_error(m, total, self.log_terms[name])
                use_rand = (m > 0) & (total > 0) & (err_det > err_rand)
                n_groups += int((m > 0).sum())
                n_sampled += int(use_rand.sum())
                for i in torch.nonzero(use_rand).flatten().tolist():
                    sampled = sample_group(sens_side[i] / total[i], int(m[i]), self.streams[name][i, side])
                    factor[i] = torch.where(in_side[i], sampled, factor[i])
            out[name] = factor.reshape(self.shapes[name])
        self._cache[lam] = out
        self.sampled_fraction[lam] = n_sampled / max(1, n_groups)
        return out

    def masks(self, lam: float) -> dict[str, torch.Tensor]:
        return {n: f != 0 for n, f in self.factors(lam).items()}

    def removal_lambda(self, name: str, lambdas: Any) -> tuple[Any, str]:
        """Sampled groups are not nested in a closed form: scanned on the grid."""
        from .family import scanned_removal_lambda

        return scanned_removal_lambda(self, name, lambdas)

    def figure_notes(self, lam: float | None) -> list[str]:
        notes = super().figure_notes(lam)
        if lam is not None:  # the kept weights of sampled groups are rescaled
            reweighted = sum(int(((f != 0) & (f != 1)).sum()) for f in self.factors(float(lam)).values())
            notes.append(f"{reweighted} kept entries of the pool reweighted by count/(m·p)")
        return notes

    def sparsity(self, lam: float) -> float:
        zeros = sum(int((f == 0).sum()) for f in self.factors(lam).values())
        return zeros / self.pool_size

    def apply(self, params: Mapping[str, torch.Tensor], lam: float) -> dict[str, torch.Tensor]:
        out = dict(params)
        for name, f in self.factors(lam).items():
            w = params[name]
            out[name] = torch.where(f.to(w.device) != 0, w * f.to(device=w.device, dtype=w.dtype), torch.zeros((), dtype=w.dtype, device=w.device))
        return out
