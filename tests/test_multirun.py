"""Multiruns through the real CLI: launchers, resume, single-λ mode and aggregation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from confprune.figures import collect
from confprune.record import RunSummary, read_summary

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
SMOKE = ["experiment=mnist_smoke", "figures=false", "sweep.num_threads=1"]


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "confprune.run", *args], capture_output=True, text=True,
                          cwd=REPO, env=dict(os.environ), timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def summaries(sweep_dir: Path) -> dict[str, RunSummary]:
    return {p.parent.name: read_summary(p) for p in sorted(sweep_dir.glob("*/summary.json"))}


def test_resume_skips_finished_jobs_and_redoes_dead_ones(tmp_path):
    sweep = tmp_path / "sweep"
    cli("-m", *SMOKE, "calibration.alpha=0.08,0.1,0.2", f"hydra.sweep.dir={sweep}")
    first = summaries(sweep)
    assert sorted(first) == ["0", "1", "2"]
    # Job 1 "died half-way": its summary.json is missing, a partial file is left behind.
    (sweep / "1" / "summary.json").unlink()
    mtime0 = (sweep / "0" / "summary.json").stat().st_mtime_ns
    proc = cli("-m", *SMOKE, "calibration.alpha=0.08,0.1,0.2", f"hydra.sweep.dir={sweep}")
    assert proc.stderr.count("skipping") + proc.stdout.count("skipping") == 2
    assert (sweep / "0" / "summary.json").stat().st_mtime_ns == mtime0  # not recomputed, not rewritten
    second = summaries(sweep)
    assert sorted(second) == ["0", "1", "2"]
    for job in ("0", "1", "2"):  # identical results, the redone job included
        for key in ("lambda_hat", "sparsity_hat", "coverage", "iid_coverage", "config_hash"):
            assert getattr(second[job], key) == getattr(first[job], key), (job, key)


def test_refuses_to_overwrite_a_different_run(tmp_path):
    run_dir = tmp_path / "run"
    cli(*SMOKE, f"hydra.run.dir={run_dir}")
    proc = subprocess.run([sys.executable, "-m", "confprune.run", *SMOKE, "calibration.alpha=0.2", f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=600)
    assert proc.returncode != 0 and "config_hash" in proc.stderr
    assert read_summary(run_dir).alpha == 0.1  # the finished run is intact


@pytest.mark.parametrize("launcher", ["local_parallel", "submitit_local"])
def test_parallel_and_submitit_launchers(tmp_path, launcher):
    sweep = tmp_path / launcher
    extra = ["hydra.launcher.timeout_min=10"] if launcher == "submitit_local" else []
    cli("-m", *SMOKE, "bound=binomial,hb", f"hydra/launcher={launcher}", *extra, f"hydra.sweep.dir={sweep}")
    got = summaries(sweep)
    assert sorted(s.bound for s in got.values()) == ["binomial", "hb"]
    # Both jobs share one model and one loss table: equal certified λ̂ would need equal bounds,
    # but the dense risk (from the shared table) must agree exactly.
    assert len({s.dense_risk for s in got.values()}) == 1
    from confprune.verify import main as verify_main

    for job in got:  # every job's certificate verifies, the ones built from the shared cached table too
        assert verify_main([str(sweep / job / "certificate.json"), str(sweep / job / "pruned_model.pt")]) == 0


def test_single_lambda_mode_and_aggregation(tmp_path):
    sweep = tmp_path / "lam"
    cli("-m", *SMOKE, "calibration.lambdas=[0.0],[0.5],[0.9]", f"hydra.sweep.dir={sweep}")
    table = collect(sweep)
    assert sorted(table["lambda_0"]) == [0.0, 0.5, 0.9] and (table["n_lambdas"] == 1).all()
    proc = subprocess.run([sys.executable, "-m", "confprune.figures", str(sweep)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    agg = sweep / "aggregate"
    assert (agg / "results.csv").exists() and (agg / "results.parquet").exists()
    assert (agg / "figures" / "lambda_sweep_risk.png").exists()
    assert len(pd.read_parquet(agg / "results.parquet")) == 3


def test_entry_module_and_pipeline_import_only_what_a_job_needs():
    """A launcher's parent process imports confprune.run to compose and dispatch jobs: it must not
    pay for torch, SciPy, pandas or matplotlib. A job without figures never imports matplotlib,
    pandas or scipy.stats (each parallel worker would pay ~1.5 s for them)."""
    code = (
        "import sys, confprune.run\n"
        "heavy = {'torch', 'scipy', 'pandas', 'matplotlib'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "import confprune.pipeline\n"
        "drawn = {'pandas', 'matplotlib', 'scipy.stats'} & set(sys.modules)\n"
        "assert not drawn, drawn\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_splits_csv_matches_the_pandas_format(tmp_path):
    import numpy as np

    from confprune.record import read_splits, write_splits

    cols = {
        "split": np.arange(4),
        "lambda_hat": np.array([0.89, np.nan, 0.1 + 0.2, 1 / 3]),
        "cal_risk": np.array([0.0, 0.0033333333333333335, 1e-17, 0.5]),
        "violated": np.array([True, False, False, True]),
    }
    write_splits(tmp_path / "ours.csv", cols)
    pd.DataFrame(cols).to_csv(tmp_path / "pandas.csv", index=False)
    assert (tmp_path / "ours.csv").read_text() == (tmp_path / "pandas.csv").read_text()
    back = pd.read_csv(tmp_path / "ours.csv")
    assert back["violated"].dtype == bool and back["split"].dtype == np.int64
    ours = read_splits(tmp_path / "ours.csv")  # the record's own reader: the same columns, exactly
    for name, values in cols.items():
        np.testing.assert_array_equal(ours[name], values)
    np.testing.assert_array_equal(back["lambda_hat"].to_numpy(), cols["lambda_hat"])  # exact, NaN included
