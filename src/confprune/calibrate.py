"""Calibration stage: the deployment calibration set, early stopping, and the certified λ̂.

The deployment calibration set is a seeded random subset of the pool, drawn independently of the
validation splits; its indices (in their random order, which WSR uses) go into the certificate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stats import (
    NOT_CERTIFIED,
    Calibration,
    Splits,
    calibrate,
    make_fwer,
    pvalues_from_losses,
    split_pvalues,
)

_DEPLOY_STREAM = 0x0DE9  # separates the deployment draw from the validation splits' stream


def deployment_indices(n_pool: int, n_cal: int, seed: int) -> np.ndarray:
    """Calibration indices for the deployed model: n_cal pool points in a uniformly random order."""
    if not 1 <= n_cal <= n_pool:
        raise ValueError(f"n_cal={n_cal} must lie in [1, pool size {n_pool}]")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _DEPLOY_STREAM]))
    return rng.permutation(n_pool)[:n_cal]


class FixedSequenceStop:
    """Stop rule for the sweep: True once fixed-sequence testing has failed on every split and on
    the deployment calibration set, so no later λ can be certified by any of them."""

    def __init__(self, splits: Splits | None, deploy: np.ndarray, *, alpha: float, delta: float, bound: str):
        self.splits, self.deploy = splits, deploy
        self.alpha, self.delta, self.bound = alpha, delta, bound
        self.alive_splits = np.ones(splits.n_splits if splits is not None else 0, dtype=bool)
        self.alive_deploy = True

    def __call__(self, j: int, row: np.ndarray) -> bool:
        if self.splits is not None and self.alive_splits.any():
            p, _ = split_pvalues(row[None], self.splits, alpha=self.alpha, delta=self.delta, bound=self.bound)
            self.alive_splits &= p[0] <= self.delta
        if self.alive_deploy:
            p_dep = pvalues_from_losses(self.bound, row[self.deploy], self.alpha, self.delta)  # type: ignore[arg-type]
            self.alive_deploy = bool(p_dep <= self.delta)
        return not self.alive_deploy and not self.alive_splits.any()


@dataclass
class Certification:
    """The deployable LTT result on one calibration set."""

    calibration: Calibration
    grid: np.ndarray  # (G,) the full grid fixed in advance
    sparsity: np.ndarray  # (G',) fraction of the pruning pool removed, evaluated rows
    cal_indices: np.ndarray  # pool indices of the calibration set, in the order used

    @property
    def certified(self) -> bool:
        return self.calibration.certified

    @property
    def lambda_index(self) -> int:
        return self.calibration.lambda_index

    @property
    def lambda_hat(self) -> float | None:
        return float(self.grid[self.lambda_index]) if self.certified else None

    @property
    def sparsity_hat(self) -> float | None:
        return float(self.sparsity[self.lambda_index]) if self.certified else None

    @property
    def cal_risk(self) -> float | None:
        return float(self.calibration.risk[self.lambda_index]) if self.certified else None


def certify_table(
    losses: np.ndarray,
    grid: np.ndarray,
    sparsity: np.ndarray,
    cal_indices: np.ndarray,
    *,
    alpha: float,
    delta: float,
    bound: str,
    fwer: str = "fixed_sequence",
    n_starts: int = 4,
) -> Certification:
    """LTT on the calibration columns ``cal_indices`` of a (G', N) loss table.

    Rows beyond G' (not evaluated because the sweep stopped early) count as not rejected; with
    fixed-sequence testing that changes nothing, since testing had already stopped there.
    """
    procedure = make_fwer(fwer, n_starts=n_starts)
    cal = calibrate(
        losses[:, cal_indices], alpha=alpha, delta=delta, bound=bound, fwer=procedure, order_seed=None
    )
    return Certification(calibration=cal, grid=np.asarray(grid), sparsity=np.asarray(sparsity), cal_indices=np.asarray(cal_indices))


__all__ = ["NOT_CERTIFIED", "Certification", "FixedSequenceStop", "certify_table", "deployment_indices"]
