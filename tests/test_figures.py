"""Figures tell the truth: honest sparsity over splits, histogram bins at the attainable risks,
titles that name δ, loss and criterion, and PNG + PDF for every figure (synthetic data, no runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.container import ErrorbarContainer
from torch import nn

from confprune import figures
from confprune.pruning import build_family
from confprune.record import (
    Deployment,
    GridInfo,
    LambdaHat,
    RunSummary,
    SparsityHat,
    Throughput,
    read_splits,
    write_splits,
    write_summary,
)
from confprune.stats import (
    clopper_pearson,
    draw_iid_calibration,
    draw_splits,
    iid_validation,
    validate_splits,
)

ALPHA, DELTA = 0.1, 0.1
GRID = np.round(np.arange(0.0, 0.96, 0.05), 2)  # (20,)
N_POOL, N_CAL, N_TEST, N_SPLITS = 800, 500, 300, 60


def titles(fig) -> str:
    """Every title of a figure (suptitle, axes titles, supxlabel), one string."""
    parts = [
        fig._suptitle.get_text() if fig._suptitle else "",
        fig._supxlabel.get_text() if fig._supxlabel else "",
    ]
    return "\n".join(parts + [ax.get_title() for ax in fig.axes])


@pytest.fixture(scope="module")
def loss_table() -> np.ndarray:
    """(G, N) Bernoulli losses with a known risk that rises with λ: 0.04 flat, then steeply."""
    rng = np.random.default_rng(0)
    risk = 0.04 + 0.5 * np.clip(GRID - 0.6, 0, None) ** 2 * 10
    return (rng.random((GRID.size, N_POOL)) < risk[:, None]).astype(np.float32)


@pytest.fixture(scope="module")
def validations(loss_table):
    splits = draw_splits(N_POOL, N_CAL, N_TEST, N_SPLITS, seed=1)
    v = validate_splits(
        loss_table, splits, alpha=ALPHA, delta=DELTA, bound="binomial", keep_pvalues=True
    )
    iid = iid_validation(
        loss_table,
        n_cal=N_CAL,
        n_reps=N_SPLITS,
        alpha=ALPHA,
        delta=DELTA,
        bound="binomial",
        draws=draw_iid_calibration(N_POOL, N_CAL, N_SPLITS, seed=2),
    )
    return v, iid


@pytest.fixture(scope="module")
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)
    ).eval()


def label(
    criterion: str = "magnitude", synthetic: bool = False, structure: str = "unstructured"
) -> figures.RunLabel:
    return figures.RunLabel(
        model="tiny_cnn",
        dataset="toy",
        loss="label_01",
        bound="binomial",
        fwer="fixed_sequence",
        criterion=criterion,
        alpha=ALPHA,
        delta=DELTA,
        structure=structure,
        synthetic=synthetic,
    )


# --------------------------------------------------------------------------------------------
# Honest sparsity over splits


def test_split_sparsity_counts_uncertified_splits_as_zero():
    # 10 splits, 3 certify sparsity 0.3, 7 certify nothing: "no claim" prunes nothing.
    certified = np.array([True] * 3 + [False] * 7)
    columns = {"certified": certified, "sparsity_hat": np.where(certified, 0.3, np.nan)}
    honest = figures.split_sparsity(columns)
    np.testing.assert_array_equal(honest, [0.3] * 3 + [0.0] * 7)
    assert np.median(honest) == 0.0
    # Negative control: the statistic the old figure plotted (certifying splits only) says 0.3.
    assert np.nanmedian(columns["sparsity_hat"]) == pytest.approx(0.3)


# --------------------------------------------------------------------------------------------
# Histogram bins at the attainable risks k/n_test


@pytest.mark.parametrize("n_test,alpha", [(10, 0.2), (300, 0.1), (500, 0.05), (1000, 0.013)])
def test_risk_bin_edges_are_multiples_of_one_over_n_test(n_test, alpha):
    rng = np.random.default_rng(n_test)
    # Test risks of binary losses: k/n_test exactly as validate_splits computes them (sum / n_test).
    risks = rng.binomial(n_test, alpha * 0.8, size=400).astype(np.float64) / n_test
    edges = figures.risk_bin_edges(risks, n_test, alpha)
    k = edges * n_test
    np.testing.assert_allclose(
        k, np.rint(k), rtol=0, atol=1e-9
    )  # every edge is a multiple of 1/n_test
    steps = np.diff(np.rint(k))
    assert (
        np.all(steps == steps[0]) and steps[0] >= 1
    )  # every bin holds the same number of attainable values
    assert edges[0] <= risks.min() and edges[-1] > risks.max()
    counts, _ = np.histogram(risks, edges)
    assert counts.sum() == risks.size
    # No bin mixes risks ≤ α with risks > α (bins are [left, right)).
    which = np.searchsorted(edges, risks, side="right") - 1
    for b in np.unique(which):
        sides = set((risks[which == b] > alpha).tolist())
        assert len(sides) == 1, (b, sides)


def test_default_binning_would_fail_the_check():
    """Negative control: 30 equal bins over the same risks are not at multiples of 1/n_test, so
    the check above can fail (and such bins hold 0, 1 or 2 attainable values: fake spikes)."""
    n_test = 500
    risks = np.random.default_rng(0).binomial(n_test, 0.05, size=400) / n_test
    k = np.histogram_bin_edges(risks, bins=30) * n_test
    assert not np.allclose(k, np.rint(k), rtol=0, atol=1e-9)


def test_risk_bin_edges_for_a_loss_in_zero_one_put_an_edge_at_alpha():
    risks = np.random.default_rng(1).beta(2, 20, size=300)  # a fractional loss: no 1/n_test lattice
    edges = figures.risk_bin_edges(risks, 37, alpha=0.1)
    assert np.isclose(edges, 0.1).any() and edges[0] <= risks.min() and edges[-1] > risks.max()


def test_test_risk_histogram_bars_sit_on_the_lattice_and_title_gives_both_checks(validations):
    v, iid = validations
    fig = figures.test_risk_histogram(v, iid, label())
    ax = fig.axes[0]
    lefts = np.array([p.get_x() for p in ax.patches])
    assert lefts.size and np.allclose(lefts * N_TEST, np.rint(lefts * N_TEST), rtol=0, atol=1e-9)
    text = titles(fig)
    assert "i.i.d. check" in text and "split check" in text and "guarantee" in text
    assert f"{iid.coverage:.3f}" in text and f"{v.coverage:.3f}" in text


# --------------------------------------------------------------------------------------------
# Per-run figures: titles and the heat map's "removed at λ̂"


def per_run_figures(v, iid, model, family, lam_hat, lab):
    g = GRID.size
    pool_risk = np.asarray(v.cal_risk_table.mean(1))
    cost = {
        "curve": {
            "lambda": list(GRID),
            "macs": [1000] * g,
            "nonzero_macs": list(np.linspace(1000, 200, g)),
        },
        "dense": {"macs": 1000},
        "deploy": {"macs": 1000, "nonzero_macs": 400},
        "latency": [
            {
                "lambda": None,
                "batch_1": {"median_s": 2e-4, "p10_s": 1.8e-4, "p90_s": 2.5e-4, "threads": 1},
            },
            {
                "lambda": lam_hat,
                "batch_1": {"median_s": 1.9e-4, "p10_s": 1.7e-4, "p90_s": 2.2e-4, "threads": 1},
            },
            {
                "lambda": 0.5,
                "batch_1": {"median_s": 2.1e-4, "p10_s": 1.9e-4, "p90_s": 2.4e-4, "threads": 1},
            },
        ],
        "machine": {"cpu": "test CPU"},
    }
    return {
        "risk_vs_lambda": figures.risk_vs_lambda(GRID, GRID * 0.9, v, pool_risk, lam_hat, lab),
        "test_risk_hist": figures.test_risk_histogram(v, iid, lab),
        "lambda_hat_hist": figures.lambda_hat_histogram(GRID, v, lam_hat, lab),
        "first_layer_heatmap": figures.first_layer_heatmap(model, family, GRID, lam_hat, lab),
        "risk_vs_cost": figures.risk_vs_cost(pool_risk, cost, lam_hat, lab),
    }


@pytest.fixture(scope="module")
def run_figures(validations, tiny_model):
    """Every per-run figure of a synthetic-data run pruned at random (built once, rendered once)."""
    v, iid = validations
    family = build_family(tiny_model, criterion="random", seed=3)
    return per_run_figures(v, iid, tiny_model, family, 0.5, label("random", synthetic=True))


def test_per_run_titles_name_delta_loss_criterion_and_synthetic(validations, run_figures):
    v, _ = validations
    for stem, fig in run_figures.items():
        text = titles(fig)
        for needed in (
            "δ = 0.1",
            "α = 0.1",
            "label_01",
            "random",
            "binomial",
            "fixed_sequence",
            "SYNTHETIC",
        ):
            assert needed in text, (stem, needed)
    # Negative control: a run on real data does not claim to be synthetic.
    real = figures.lambda_hat_histogram(GRID, v, 0.5, label("random"))
    assert "SYNTHETIC" not in titles(real)


def test_heatmap_draws_what_the_family_removes_for_every_criterion(tiny_model):
    lam = 0.4
    for options in (
        {"criterion": "magnitude"},
        {"criterion": "random", "include_bias": False, "seed": 1},
    ):
        family = build_family(tiny_model, **options)
        fig = figures.first_layer_heatmap(
            tiny_model, family, GRID, lam, label(options["criterion"])
        )
        removed_panel = fig.axes[2].images[0].get_array()  # (tiled kernels) 1 = removed, NaN = gap
        truth = ~family.masks(lam)["0.weight"]
        assert int(np.nansum(removed_panel)) == int(truth.sum()) > 0
        caption = fig._supxlabel.get_text()
        assert f"{int(truth.sum())} of {truth.numel()} entries" in caption
        assert ("biases are outside the pruning pool" in caption) == (
            not options.get("include_bias", True)
        )
    # Negative control: a panel drawn at another λ would show another count, so the check bites.
    other = build_family(tiny_model, criterion="magnitude")
    assert int((~other.masks(0.1)["0.weight"]).sum()) != int((~other.masks(lam)["0.weight"]).sum())


def test_heatmap_without_a_certificate_removes_nothing(tiny_model):
    family = build_family(tiny_model)
    fig = figures.first_layer_heatmap(tiny_model, family, GRID, None, label())
    assert "nothing certified" in fig.axes[2].texts[0].get_text() and not fig.axes[2].images


# --------------------------------------------------------------------------------------------
# Multirun: collect reads splits.csv, figures show uncertified splits and name the setting


def fake_job(
    job_dir: Path,
    *,
    loss: str,
    alpha: float,
    criterion: str,
    certified: np.ndarray,
    sparsity: float,
    deployed: bool,
    seed: int,
) -> None:
    """A finished job's summary.json and splits.csv (no model, no run)."""
    rng = np.random.default_rng(seed)
    s = certified.size
    test_risk = np.where(certified, rng.binomial(N_TEST, alpha * 0.8, size=s) / N_TEST, np.nan)
    violated = certified & (np.nan_to_num(test_risk) > alpha)
    write_splits(
        job_dir / "splits.csv",
        {
            "split": np.arange(s),
            "lambda_hat": np.where(certified, sparsity, np.nan),
            "sparsity_hat": np.where(certified, sparsity, np.nan),
            "cal_risk": np.where(certified, alpha / 2, np.nan),
            "test_risk": test_risk,
            "violated": violated,
            "certified": certified,
        },
    )
    lam = sparsity if deployed else None
    med = sparsity if certified.any() else None
    summary = RunSummary(
        config_hash="x",
        experiment="fake",
        model="tiny_cnn",
        dataset="toy",
        synthetic_data=True,
        loss=loss,
        bound="binomial",
        fwer="fixed_sequence",
        criterion=criterion,
        scope="global",
        score_inputs=None,
        seed=0,
        alpha=alpha,
        delta=DELTA,
        n_cal=N_CAL,
        n_test=N_TEST,
        n_splits=s,
        pool_size=N_POOL,
        grid=GridInfo(GRID.size, GRID.size, 0.0, 0.95),
        lambdas=list(GRID),
        pool_risk=[0.04] * GRID.size,
        dense={"accuracy": 0.96},
        dense_risk=0.04,
        model_from_cache=True,
        loss_table_from_cache=True,
        dense_metrics_from_cache=True,
        lambda_hat=LambdaHat(med, med, med, lam),
        sparsity_hat=SparsityHat(med, lam, lam),
        deploy=Deployment(deployed, alpha / 2 if deployed else None, None),
        coverage=float(1 - violated.mean()),
        coverage_ci=list(clopper_pearson(int((~violated).sum()), s)),
        iid_coverage=1.0,
        iid_coverage_ci=list(clopper_pearson(s, s)),
        test_risk_median=None,
        violations=int(violated.sum()),
        certified_fraction=float(certified.mean()),
        aux_at_deploy={},
        throughput=Throughput(1.0, 1.0, 1),
        timing={},
        files={},
        output_dir=str(job_dir),
        artifacts={},
    )
    write_summary(summary, job_dir)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    job = 0
    for loss in ("label_01", "disagreement"):
        for alpha, n_cert in ((0.01, 12), (0.1, 50)):
            for criterion, sparsity in (
                ("magnitude", 0.3 + 5 * alpha),
                ("random", 0.1 + 2 * alpha),
            ):
                certified = np.arange(50) < n_cert  # α = 0.01: 24% of the splits certify
                fake_job(
                    root / str(job),
                    loss=loss,
                    alpha=alpha,
                    criterion=criterion,
                    certified=certified,
                    sparsity=sparsity,
                    deployed=n_cert == 50,
                    seed=job,
                )
                job += 1
    return root


def test_collect_from_a_relative_directory_records_absolute_job_dirs(sweep, monkeypatch):
    # the notebook reads job_dir from another working directory (it crashed on relative ones)
    monkeypatch.chdir(sweep.parent)
    table = figures.collect(sweep.name)
    assert all(Path(d).is_absolute() and Path(d).is_dir() for d in table["job_dir"])


def test_collect_adds_the_honest_sparsity_from_splits_csv(sweep):
    table = figures.collect(sweep)
    low = table[
        (table["alpha"] == 0.01)
        & (table["criterion"] == "magnitude")
        & (table["loss"] == "label_01")
    ].iloc[0]
    assert low["certified_fraction"] == pytest.approx(0.24)
    assert low["sparsity_hat_median"] == pytest.approx(
        0.35
    )  # the summary's: certifying splits only
    assert (
        low["sparsity_all_median"] == 0.0 and low["sparsity_all_q05"] == 0.0
    )  # uncertified count as 0
    assert low["sparsity_all_q95"] == pytest.approx(0.35)
    full = table[(table["alpha"] == 0.1) & (table["criterion"] == "magnitude")].iloc[0]
    assert full["sparsity_all_median"] == pytest.approx(
        full["sparsity_hat_median"]
    )  # all certified: same
    cols = read_splits(low["job_dir"])
    assert np.median(figures.split_sparsity(cols)) == low["sparsity_all_median"]


def test_sweep_figures_are_honest_and_titled(sweep, tmp_path):
    table = figures.collect(sweep)
    plots = figures.sweep_plots(table)
    assert set(plots) == {
        "sparsity_vs_alpha",
        "coverage_vs_alpha",
        "test_risk_hist_per_alpha",
        "criteria_comparison",
    }
    for stem, fig in plots.items():
        text = titles(fig)
        for needed in ("δ = 0.1", "tiny_cnn", "FWER fixed_sequence", "SYNTHETIC", "label_01"):
            assert needed in text, (stem, needed)
    # Sparsity vs α: the median at α = 0.01 sits at 0 (24% certified), not at the certifying median.
    top = plots["sparsity_vs_alpha"].axes[0]
    medians = [line for line in top.get_lines() if line.get_marker() == "o"]
    at_low = [  # the smallest α, 0.01 (series are dodged sideways by a little)
        float(np.asarray(line.get_ydata())[np.argmin(line.get_xdata())]) for line in medians
    ]
    assert at_low and all(y == 0.0 for y in at_low)
    # Histograms: a panel per loss (rows) × α (columns), each with a legend; 1/n_test lattice bins.
    hist = plots["test_risk_hist_per_alpha"]
    panels = [ax for ax in hist.axes if ax.get_title().startswith("loss = ")]
    assert len(panels) == 2 * 2 and all(ax.get_legend() is not None for ax in panels)
    for ax in panels:
        for patch in ax.patches:  # step histograms: one polygon per series
            xs = np.asarray(patch.get_xy())[:, 0] * N_TEST
            np.testing.assert_allclose(xs, np.rint(xs), rtol=0, atol=1e-6)
    # Criteria comparison: 5–95% error bars over splits on every bar.
    crit = [ax for ax in plots["criteria_comparison"].axes if ax.get_title().startswith("loss = ")]
    for ax in crit:
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == 2  # one per criterion
    label_01 = next(ax for ax in crit if ax.get_title() == "loss = label_01")
    segments = [
        seg
        for c in label_01.containers
        if isinstance(c, ErrorbarContainer)
        for seg in c.lines[2][0].get_segments()
    ]
    # magnitude at α = 0.01: 24% of splits certify sparsity 0.35 → 5–95% over splits is [0, 0.35].
    assert any(np.allclose(seg[:, 1], [0.0, 0.35]) for seg in segments)
    for (
        stem,
        fig,
    ) in plots.items():  # what sweep_figures writes (the CLI's own test runs it end to end)
        png, pdf = figures.save_figure(fig, tmp_path, stem)
        assert (
            Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            and Path(pdf).read_bytes()[:5] == b"%PDF-"
        )


# --------------------------------------------------------------------------------------------
# Files, and no global state


def test_every_per_run_figure_writes_png_and_pdf(run_figures, tmp_path):
    assert set(run_figures) == {
        "risk_vs_lambda",
        "test_risk_hist",
        "lambda_hat_hist",
        "first_layer_heatmap",
        "risk_vs_cost",
    }
    for stem, fig in run_figures.items():
        png, pdf = figures.save_figure(fig, tmp_path, stem)
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
        assert Path(pdf).read_bytes()[:5] == b"%PDF-", stem


def test_save_figure_closes_a_callers_pyplot_figure(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    figures.save_figure(fig, tmp_path, "pyplot_made")
    assert (tmp_path / "pyplot_made.png").is_file() and (tmp_path / "pyplot_made.pdf").is_file()
    assert fig.number not in plt.get_fignums()  # freed, as pyplot figures were before


def test_importing_figures_leaves_backend_and_rcparams_alone():
    """A notebook imports this module: it must not switch the backend (inline plots would vanish)
    nor change rcParams, and it must not need pyplot."""
    code = (
        "import sys, matplotlib\n"
        "keys = ['font.size', 'figure.dpi', 'axes.titlesize', 'legend.fontsize', 'savefig.bbox']\n"
        "state = lambda: ({k: matplotlib.rcParams[k] for k in keys},\n"
        "                 matplotlib.rcParams._get_backend_or_none())\n"
        "before = state()\n"
        "import confprune.figures as f\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "after = state()\n"
        "assert before == after, (before, after)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
