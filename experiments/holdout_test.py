"""How often verify's held-out test (level 10⁻³) rejects honest certificates on real loss tables.

For each finished run and α ∈ {0.01, 0.03, 0.05, 0.1}: 400 deployment draws (seeds 0–399) of the
run's n_cal points, LTT (binomial, fixed sequence, δ = 0.05) on each, and the held-out test of the
certified claim on the points outside the draw; a claim is true when the pool risk at λ̂ ≤ α.

    python experiments/holdout_test.py RUN_DIR [RUN_DIR ...]

Prints one line per run and α and the totals (README "What a certificate proves").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from confprune.calibrate import deployment_indices
from confprune.record import read_summary
from confprune.stats import certified_index, make_fwer, pvalues_from_losses, reject_on_grid
from confprune.sweep import LossTable
from confprune.verify import HOLDOUT_LEVEL, _claim_test_pvalue

ALPHAS = (0.01, 0.03, 0.05, 0.1)
DELTA, SEEDS = 0.05, 400


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    fixed = make_fwer("fixed_sequence")
    totals = np.zeros(4, dtype=int)  # true claims, rejected; false claims, rejected
    for run in args.runs:
        losses = LossTable.load(run / "losses.npz").losses.astype(np.float64)
        n_pool, n_cal = losses.shape[1], read_summary(run).n_cal
        truth = losses.mean(axis=1)
        for alpha in ALPHAS:
            counts = np.zeros(4, dtype=int)
            for seed in range(SEEDS):
                idx = deployment_indices(n_pool, n_cal, seed)
                p = pvalues_from_losses("binomial", losses[:, idx], alpha, DELTA)
                j = int(certified_index(reject_on_grid(fixed, p, DELTA)))
                if j < 0:
                    continue
                rest = np.setdiff1d(np.arange(n_pool), idx)
                rejected = _claim_test_pvalue(losses[j, rest], alpha) < HOLDOUT_LEVEL
                at = 0 if truth[j] <= alpha else 2
                counts[at] += 1
                counts[at + 1] += int(rejected)
            totals += counts
            print(f"{run.name:32s} alpha={alpha:<5g} true claims {counts[0]:4d} rejected {counts[1]}; "
                  f"false claims {counts[2]:4d} rejected {counts[3]}")
    print(f"total: true claims {totals[0]} rejected {totals[1]}; false claims {totals[2]} rejected {totals[3]}")


if __name__ == "__main__":
    main()
