"""Test-risk coverage vs pool-risk coverage for several calibration/test sizes, from one run's
cached loss table (no network is run).

    python experiments/coverage_vs_test_size.py outputs/runs/mnist/<timestamp>

At n_test = 1000 the test risk's noise exceeds the margin LTT leaves below α, so the fraction of
splits with test risk ≤ α understates the guarantee; the pool-risk coverage does not.
"""

from __future__ import annotations

import sys
from pathlib import Path

from confprune.record import read_summary
from confprune.stats import draw_splits, iid_validation, validate_splits
from confprune.sweep import LossTable


def main(run_dir: str) -> None:
    run = Path(run_dir)
    summary = read_summary(run).to_dict()
    table = LossTable.load(run / "losses.npz")
    n = table.losses.shape[1]
    print(f"{summary['experiment']}: {summary['bound']}/{summary['fwer']}, alpha={summary['alpha']}, delta={summary['delta']}")
    print(f"{'n_cal':>6} {'n_test':>6} {'test coverage':>14} {'i.i.d. exact':>14} {'median lambda':>14}")
    for n_cal in (9 * n // 10, n // 2, n // 5):
        splits = draw_splits(n, n_cal, n - n_cal, summary["n_splits"], seed=summary["seed"])
        v = validate_splits(table.losses, splits, alpha=summary["alpha"], delta=summary["delta"], bound=summary["bound"], fwer=summary["fwer"])
        iid = iid_validation(table.losses, n_cal=n_cal, n_reps=summary["n_splits"], alpha=summary["alpha"],
                             delta=summary["delta"], bound=summary["bound"], fwer=summary["fwer"], seed=summary["seed"])
        lam = table.lambdas[v.lambda_index[v.certified]]
        med = f"{float(sorted(lam)[len(lam) // 2]):.2f}" if len(lam) else "-"
        print(f"{n_cal:>6} {n - n_cal:>6} {v.coverage:>14.3f} {iid.coverage:>14.3f} {med:>14}")


if __name__ == "__main__":
    main(sys.argv[1])
