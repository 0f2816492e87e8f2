"""The runner's calibration data: the deployment calibration set and the sweep's early-stop rule.

The deployment calibration set is a random subset of the pool, drawn independently of the
validation splits from the seed a commitment derives (:mod:`confprune.commitment`); its indices (in their random order, which WSR uses) go into the certificate.
The certified λ̂ itself comes from :func:`confprune.stats.calibrate` via :func:`confprune.certify_from_table`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .stats import NOT_CERTIFIED, Splits, pvalues_from_losses, split_pvalues

_DEPLOY_STREAM = 0x0DE9  # separates the deployment draw from the validation splits' stream
_ORDER_STREAM = 0x0DE5  # the betting order of an issuer-chosen calibration set


def deployment_indices(n_pool: int, n_cal: int, seed: int) -> np.ndarray:
    """Calibration indices for the deployed model: n_cal pool points in a uniformly random order."""
    if not 1 <= n_cal <= n_pool:
        raise ValueError(f"n_cal={n_cal} must lie in [1, pool size {n_pool}]")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _DEPLOY_STREAM]))
    return rng.permutation(n_pool)[:n_cal]


def seeded_order(indices: np.ndarray, seed: int) -> np.ndarray:
    """An issuer-chosen calibration set in a seeded random order: the indices sorted, then
    permuted by a permutation drawn from ``seed`` alone. The order does not depend on the data, so
    a sequential bound (WSR) may bet in it, and a verifier re-derives it from the set and the seed
    (data in their own order, e.g. sorted by label, would let WSR certify a false claim)."""
    idx = np.sort(np.asarray(indices, dtype=np.int64))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _ORDER_STREAM]))
    return idx[rng.permutation(idx.size)]


class FixedSequenceStop:
    """Stop rule for the sweep: True once fixed-sequence testing has failed on every calibration
    set the run will use — each set of validation splits (random splits, i.i.d. draws) and the
    deployment set — so no later λ can be certified by any of them and every result is exact."""

    def __init__(self, splits: Splits | Sequence[Splits] | None, deploy: np.ndarray, *, alpha: float, delta: float,
                 bound: str):
        self.splits = [] if splits is None else [splits] if isinstance(splits, Splits) else list(splits)
        self.deploy = deploy
        self.alpha, self.delta, self.bound = alpha, delta, bound
        self.alive = [np.ones(s.n_splits, dtype=bool) for s in self.splits]
        self.alive_deploy = True

    def __call__(self, j: int, row: np.ndarray) -> bool:
        for draws, alive in zip(self.splits, self.alive, strict=True):
            if alive.any():
                p, _ = split_pvalues(row[None], draws, alpha=self.alpha, delta=self.delta, bound=self.bound)
                alive &= p[0] <= self.delta
        if self.alive_deploy:
            p_dep = pvalues_from_losses(self.bound, row[self.deploy], self.alpha, self.delta)  # type: ignore[arg-type]
            self.alive_deploy = bool(p_dep <= self.delta)
        return not self.alive_deploy and not any(a.any() for a in self.alive)


__all__ = ["NOT_CERTIFIED", "FixedSequenceStop", "deployment_indices", "seeded_order"]
