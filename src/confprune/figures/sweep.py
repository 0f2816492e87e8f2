"""Aggregation of a multirun (``python -m confprune.figures <sweep dir>``): :func:`collect`
gathers every finished job into one table (results.csv, results.parquet) and
:func:`sweep_plots` draws the figures its swept axes make meaningful (sparsity, coverage and
test risk vs α, pruning criteria compared, risk vs λ).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .run import _risk_bars, risk_bin_edges
from .style import save_figure, styled

if TYPE_CHECKING:  # pandas is imported where the sweep tables are built, not by every run
    import pandas as pd

SUMMARY_COLUMNS = [
    "experiment", "model", "dataset", "synthetic_data", "loss", "bound", "fwer", "criterion",
    "scope", "structure", "seed", "alpha", "delta", "n_cal", "n_test", "n_splits", "dense_accuracy",
    "lambda_hat_median", "lambda_hat_deploy", "sparsity_hat_median", "sparsity_hat_deploy",
    "sparsity_all_median", "sparsity_all_q05", "sparsity_all_q95", "coverage", "coverage_lo",
    "coverage_hi", "iid_coverage", "iid_coverage_lo", "iid_coverage_hi", "violations",
    "certified_fraction", "n_lambdas", "lambda_0", "pool_risk_0", "job_dir",
]


def split_sparsity(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """(S,) certified sparsity of every split, 0 where the split certified nothing (ours: "no
    claim" certifies no pruning, so a statistic over splits must count it as sparsity 0, not
    drop it). ``columns``: ``splits.csv`` as :func:`~confprune.record.read_splits` returns it."""
    return np.where(columns["certified"], np.nan_to_num(columns["sparsity_hat"], nan=0.0), 0.0)


def _split_sparsity_stats(job_dir: Path) -> dict[str, float]:
    from ..record import read_splits

    names = ("sparsity_all_q05", "sparsity_all_median", "sparsity_all_q95")
    try:
        s = split_sparsity(read_splits(job_dir))
    except FileNotFoundError:  # a job directory without splits.csv: the statistics are unknown
        return dict.fromkeys(names, np.nan)
    quantiles = np.quantile(s, [0.05, 0.5, 0.95])
    return {name: float(q) for name, q in zip(names, quantiles, strict=True)}


#: columns copied from each job's summary as they are
_FROM_SUMMARY = (
    "experiment", "model", "dataset", "synthetic_data", "loss", "bound", "fwer", "criterion",
    "scope", "structure", "seed", "alpha", "delta", "n_cal", "n_test", "n_splits", "coverage",
    "iid_coverage", "violations", "certified_fraction",
)


def collect(sweep_dir: str | Path) -> pd.DataFrame:
    """One tidy row per finished job (a directory with summary.json) under ``sweep_dir``.

    ``sparsity_hat_median`` is the summary's median over *all* splits, an uncertified split
    counted as sparsity 0 (the one definition everywhere); ``sparsity_all_*`` are the same median
    and the 5%/95% quantiles, recomputed from each job's ``splits.csv`` (:func:`split_sparsity`).
    """
    import pandas as pd

    from ..record import SUMMARY, read_summary

    rows = []
    for summary_path in sorted(Path(sweep_dir).resolve().rglob(SUMMARY)):  # absolute: job_dir works from anywhere
        s = read_summary(summary_path)
        rows.append(
            {
                **{k: getattr(s, k) for k in _FROM_SUMMARY},
                "dense_accuracy": s.dense.get("accuracy"),
                "lambda_hat_median": s.lambda_hat.median,
                "lambda_hat_deploy": s.lambda_hat.deploy,
                "sparsity_hat_median": s.sparsity_hat.median,
                "sparsity_hat_deploy": s.sparsity_hat.deploy,
                **_split_sparsity_stats(summary_path.parent),
                "coverage_lo": s.coverage_ci[0] if s.coverage_ci else None,
                "coverage_hi": s.coverage_ci[1] if s.coverage_ci else None,
                "iid_coverage_lo": s.iid_coverage_ci[0],
                "iid_coverage_hi": s.iid_coverage_ci[1],
                "n_lambdas": len(s.lambdas),
                "lambda_0": s.lambdas[0] if s.lambdas else None,
                "pool_risk_0": s.pool_risk[0] if s.pool_risk else None,
                "job_dir": str(summary_path.parent),
            }
        )
    if not rows:
        raise FileNotFoundError(f"no summary.json under {sweep_dir}: "
                                "is it a (finished) run or multirun directory?")
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


#: axes that tell jobs apart (besides α and the loss, which get their own axes and panels)
SERIES_AXES = ["model", "dataset", "bound", "criterion", "scope", "structure", "fwer", "delta",
               "n_cal"]


def _varying(table: pd.DataFrame, cols: list[str]) -> list[str]:
    return [c for c in cols if c in table and table[c].nunique(dropna=False) > 1]


def sweep_title(table: pd.DataFrame, shown: list[str]) -> str:
    """What every job of ``table`` shares (δ, model, data, loss, bound, FWER, criterion, n_cal),
    for a figure title; ``shown``: columns the figure already shows (panels, series)."""

    def same(col: str) -> Any:
        if col in shown or col not in table or table[col].nunique(dropna=False) != 1:
            return None
        return table[col].iloc[0]

    parts = []
    if (d := same("delta")) is not None:
        parts.append(f"δ = {d:g}")
    model, dataset = same("model"), same("dataset")
    if model is not None:
        parts.append(f"{model}" + (f" on {dataset}" if dataset is not None else ""))
    if same("synthetic_data"):
        parts.append("SYNTHETIC data")
    for col, name in (("loss", "loss"), ("bound", "bound"), ("fwer", "FWER")):
        if (v := same(col)) is not None:
            parts.append(f"{name} {v}")
    criterion, scope, structure = same("criterion"), same("scope"), same("structure")
    if criterion is not None:
        scope_note = f"({scope})" if scope not in (None, "global") else ""
        parts.append(" ".join(x for x in (structure, criterion, scope_note) if x))
    if (n := same("n_cal")) is not None and (s := same("n_splits")) is not None:
        parts.append(f"n_cal = {n}, {s} splits")
    return " · ".join(parts)


def _series_names(table: pd.DataFrame, series: list[str]) -> pd.Series:
    """A short name per job from the varying axes: the pruning family as "channel l1 (layerwise)",
    any other axis as "axis=value"."""
    if not series:
        return table["loss"].map(lambda _: "all jobs")
    family = [c for c in ("structure", "criterion", "scope") if c in series]
    others = [c for c in series if c not in family]

    def name(row: pd.Series) -> str:
        parts = []
        if family:
            parts.append(str(row["_family"]))
        parts += [f"{c}={row[c]:g}" if isinstance(row[c], float) else f"{c}={row[c]}"
                  for c in others]
        return ", ".join(parts)

    return table.apply(name, axis=1)


def _panels(table: pd.DataFrame, by: str | None) -> list[tuple[Any, pd.DataFrame]]:
    return [(None, table)] if by is None else list(table.groupby(by, sort=True))


def _yerr(mid: Any, lo: Any, hi: Any) -> np.ndarray:
    """(2, n) error-bar lengths; averages over seeds may put an interval a rounding error past its
    point, which matplotlib refuses (negative lengths)."""
    mid, lo, hi = (np.asarray(x, dtype=np.float64) for x in (mid, lo, hi))
    return np.clip(np.stack([mid - lo, hi - mid]), 0, None)


def _mean_by_alpha(g: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Mean over jobs that share α (several seeds); a single job passes through unchanged."""
    return g.groupby("alpha", as_index=False)[cols].mean()


@styled
def sparsity_vs_alpha(table: pd.DataFrame) -> Figure:
    """Certified sparsity vs α per loss: median over all splits (uncertified = 0) with a 5–95%
    band, the deployed model's sparsity (× where it certified nothing), and below it the
    fraction of splits that certified anything."""
    t = _prepared(table)
    groups = _panels(t, "loss")
    fig = Figure(figsize=(3.4 * len(groups), 4.4), layout="constrained")
    axes = fig.subplots(2, len(groups), squeeze=False, sharex="col",
                        gridspec_kw={"height_ratios": [3, 1]})
    several = bool(t.groupby(["_series", "loss", "alpha"]).size().max() > 1)
    for c, (loss, sub) in enumerate(groups):
        top, bottom = axes[0][c], axes[1][c]
        n_series = sub["_series"].nunique()
        span = float(t["alpha"].max() - t["alpha"].min())
        for i, (_, g) in enumerate(sub.groupby("_series", sort=True)):
            color = g["_color"].iloc[0]
            m = _mean_by_alpha(g, ["sparsity_all_median", "sparsity_all_q05", "sparsity_all_q95",
                                   "certified_fraction"])
            dodge = (i - (n_series - 1) / 2) * 0.012 * span  # several series' markers stay apart
            top.fill_between(m["alpha"], m["sparsity_all_q05"], m["sparsity_all_q95"], color=color,
                             alpha=0.2, lw=0)
            top.plot(m["alpha"] + dodge, m["sparsity_all_median"], marker="o", ms=3, color=color)
            deployed = g["sparsity_hat_deploy"].astype(float)
            ok = deployed.notna()
            top.plot(g["alpha"][ok] + dodge, deployed[ok], "D", mfc="none", color=color, ms=5)
            top.plot(g["alpha"][~ok] + dodge, np.zeros(int((~ok).sum())), "x", color=color, ms=6,
                     mew=1.5)
            bottom.plot(m["alpha"] + dodge, m["certified_fraction"], marker="o", ms=3, color=color)
        top.set_title(f"loss = {loss}")
        top.set_ylim(-0.03, 1.0)
        bottom.set_ylim(-0.05, 1.05)
        bottom.set_xlabel("α")
    axes[0][0].set_ylabel("certified sparsity (fraction of the pool;\nuncertified split = 0)"
                          + ("\nmean over seeds" if several else ""))
    axes[1][0].set_ylabel("splits that\ncertified")
    gray = "0.35"
    style = [
        Line2D([], [], color=gray, marker="o", ms=3, label="median over all splits"),
        Patch(color=gray, alpha=0.2, lw=0, label="5–95% over splits"),
        Line2D([], [], color=gray, marker="D", mfc="none", ls="", ms=5, label="deployed model"),
        Line2D([], [], color=gray, marker="x", mew=1.5, ls="", ms=6,
               label="deployed model certified nothing"),
    ]
    fig.legend(handles=style + _series_key(t), loc="outside lower center", ncol=2, frameon=False)
    fig.suptitle("Certified sparsity vs α\n" + sweep_title(t, ["loss", *t.attrs["series"]]))
    return fig


@styled
def coverage_vs_alpha(table: pd.DataFrame) -> Figure:
    """Coverage vs α per loss: the exact i.i.d. check (what the guarantee bounds) and the split
    check (test risk on n_test points: adds test-set noise), each with its 95% Clopper–Pearson
    interval, against 1 − δ."""
    t = _prepared(table)
    groups = _panels(t, "loss")
    fig = Figure(figsize=(3.4 * len(groups), 3.6), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)
    span = float(t["alpha"].max() - t["alpha"].min()) or float(t["alpha"].max())
    for ax, (loss, sub) in zip(axes[0], groups, strict=True):
        n_series = sub["_series"].nunique()
        for i, (_, g) in enumerate(sub.groupby("_series", sort=True)):
            color = g["_color"].iloc[0]
            m = _mean_by_alpha(g, ["coverage", "coverage_lo", "coverage_hi", "iid_coverage",
                                   "iid_coverage_lo", "iid_coverage_hi"])
            dodge = (i - (n_series - 1) / 2) * 0.012 * span  # identical series stay visible side by side
            ax.errorbar(m["alpha"] + dodge, m["iid_coverage"],
                        yerr=_yerr(m["iid_coverage"], m["iid_coverage_lo"], m["iid_coverage_hi"]),
                        marker="o", ms=3, capsize=2, color=color)
            ax.errorbar(m["alpha"] + dodge + 0.006 * span, m["coverage"],
                        yerr=_yerr(m["coverage"], m["coverage_lo"], m["coverage_hi"]),
                        marker="s", ms=3, capsize=2, color=color, ls=":", mfc="none")
        for d in sorted(sub["delta"].unique()):
            ax.axhline(1 - d, color="C3", ls="--", lw=1, label=f"1 − δ = {1 - d:g}")
        ax.set_xlabel("α")
        ax.set_title(f"loss = {loss}")
    axes[0][0].set_ylabel("coverage: fraction of splits with risk ≤ α\n(95% Clopper–Pearson)")
    gray = "0.35"
    style = [
        Line2D([], [], color=gray, marker="o", ms=3,
               label="exact i.i.d. check (true risk: what the guarantee bounds)"),
        Line2D([], [], color=gray, marker="s", mfc="none", ms=3, ls=":",
               label="split check (test risk on n_test points: adds test-set noise)"),
    ]
    targets = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()
               if h.get_label().startswith("1 − δ")}
    fig.legend(handles=style + list(targets.values()) + _series_key(t), loc="outside lower center",
               ncol=2, frameon=False)
    fig.suptitle("Coverage vs α\n" + sweep_title(t, ["loss", *t.attrs["series"]]))
    return fig


@styled
def test_risk_hist_per_alpha(table: pd.DataFrame) -> Figure:
    """Test risk at λ̂ over the certified splits of every job (from its ``splits.csv``): one
    panel per loss (rows) and α (columns), bins at multiples of 1/n_test
    (:func:`risk_bin_edges`). One series: bars, blue ≤ α and red > α; several: one step
    histogram per series. Each legend entry counts certified splits and violations."""
    from ..record import read_splits

    t = _prepared(table)
    losses, alphas = sorted(t["loss"].unique()), sorted(t["alpha"].unique())
    fig = Figure(figsize=(2.8 * len(alphas), 2.3 * len(losses) + 0.8), layout="constrained")
    axes = fig.subplots(len(losses), len(alphas), squeeze=False)
    names = sorted(t["_series"].unique())
    for r, loss in enumerate(losses):
        for c, a in enumerate(alphas):
            ax = axes[r][c]
            jobs = t[(t["loss"] == loss) & (t["alpha"] == a)]
            handles: list[Any] = []
            drawn = False
            for _, job in jobs.iterrows():
                cols = read_splits(job["job_dir"])
                risks = cols["test_risk"][cols["certified"]]
                n_over, n_split = int((risks > a).sum()), len(cols["certified"])
                counts = f"{risks.size}/{n_split} certified, {n_over} > α"
                if len(names) == 1:  # colours are explained once, below the panels
                    if risks.size:
                        _risk_bars(ax, risks, int(job["n_test"]), a)
                    handles.append(Patch(color="none", label=counts))
                else:  # the colour names the series (key below the panels), the entry its counts
                    color = job["_color"]
                    if risks.size:
                        edges = risk_bin_edges(risks, int(job["n_test"]), a)
                        ax.hist(risks, bins=edges, histtype="step", lw=1.0, color=color)
                    handles.append(Line2D([], [], color=color, label=counts))
                drawn = drawn or bool(risks.size)
            if not drawn:
                ax.text(0.5, 0.5, "no split certified" if len(jobs) else "no job", ha="center",
                        va="center", transform=ax.transAxes, fontsize=7)
                ax.set_xlim(0, 2 * a)
                ax.set_yticks([])
            alpha_line = ax.axvline(a, color="k", ls="--", lw=1, label="α")
            ax.legend(handles=handles, frameon=False, fontsize=6, loc="best",
                      handlelength=0 if len(names) == 1 else 2)
            ax.set_title(f"loss = {loss}, α = {a:g}")
            if r == len(losses) - 1:
                ax.set_xlabel("test risk at λ̂ (bins [k, k + m)/n_test)")
        axes[r][0].set_ylabel("splits")
    key = [Patch(color="C0", label="test risk ≤ α"),
           Patch(color="C3", label="test risk > α (violation)")]
    fig.legend(handles=(key if len(names) == 1 else _series_key(t)) + [alpha_line],
               loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle("Test risk at λ̂ over the certified splits\n"
                 + sweep_title(t, ["loss", *t.attrs["series"]]))
    return fig


def _dense_fails(sub: pd.DataFrame, alpha: float) -> bool:
    """Whether the dense model's pool risk already exceeds α (when the table records it)."""
    if "dense_risk" not in sub:
        return False
    risk = sub.loc[np.isclose(sub["alpha"], alpha), "dense_risk"]
    return bool(len(risk)) and bool((risk > alpha).all())


@styled
def criteria_comparison(table: pd.DataFrame) -> Figure:
    """Certified sparsity per pruning family and α: median over all splits (uncertified = 0)
    with 5–95% bars over splits; the fraction of splits that certified is printed where < 1."""
    t = _prepared(table)
    groups = _panels(t, "loss")
    fig = Figure(figsize=(3.8 * len(groups), 3.4), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)
    names = sorted(t["_family"].unique())
    alphas = sorted(t["alpha"].unique())
    width = 0.8 / len(names)
    for ax, (loss, sub) in zip(axes[0], groups, strict=True):
        stats = ["sparsity_all_median", "sparsity_all_q05", "sparsity_all_q95",
                 "certified_fraction"]
        g = sub.groupby(["_family", "alpha"])[stats].mean()
        fractions = g["certified_fraction"].groupby(level="alpha")
        nothing = (g["certified_fraction"] == 0).groupby(level="alpha").all().to_dict()
        # One label per α group where every criterion certified on the same fraction of splits
        # (e.g. when the dense risk is close to α); per-bar labels where they differ.
        shared = {a: float(v.iloc[0]) for a, v in fractions if v.nunique() == 1 and 0 < v.iloc[0] < 1}
        for i, name in enumerate(names):
            rows = [g.loc[(name, a)] if (name, a) in g.index else None for a in alphas]
            x = np.arange(len(alphas)) + i * width
            med = np.array([np.nan if r is None else r["sparsity_all_median"] for r in rows])
            lo = np.array([np.nan if r is None else r["sparsity_all_q05"] for r in rows])
            hi = np.array([np.nan if r is None else r["sparsity_all_q95"] for r in rows])
            ax.bar(x, med, width=width, color=f"C{i % 10}", label=name,
                   yerr=_yerr(med, lo, hi), capsize=2, error_kw={"lw": 0.8})
            for xi, a, r in zip(x, alphas, rows, strict=True):
                if r is not None and 0 < r["certified_fraction"] < 1 and a not in shared:
                    ax.text(xi, 0.01, f"{r['certified_fraction']:.0%}\ncert.", ha="center",
                            va="bottom",
                            fontsize=5.5, rotation=90)
                elif r is not None and r["certified_fraction"] == 0 and not nothing.get(a, True):
                    ax.text(xi, 0.01, "none\ncert.", ha="center", va="bottom", fontsize=5.5, rotation=90)
        for j, a in enumerate(alphas):  # one label where no criterion certified anything
            if a in shared:
                ax.text(j + 0.4 - width / 2, 0.02, f"every criterion: {shared[a]:.0%} of splits certified",
                        ha="center", va="bottom", fontsize=6.5, rotation=90,
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
            if nothing.get(a, False):
                ax.text(j + 0.4 - width / 2, 0.02, "nothing certified\n(dense risk > α)" if _dense_fails(sub, a)
                        else "nothing certified", ha="center", va="bottom", fontsize=6.5, rotation=90)
        ax.set_xticks(np.arange(len(alphas)) + 0.4 - width / 2)
        ax.set_xticklabels([f"α = {a:g}" for a in alphas])
        ax.set_title(f"loss = {loss}")
    axes[0][0].set_ylabel("certified sparsity, median over all splits\n"
                          "(uncertified = 0; bars: 5–95%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(names)), frameon=False)
    fig.suptitle("Pruning criteria compared\n"
                 + sweep_title(t, ["loss", "criterion", "scope", "structure"]))
    return fig


@styled
def lambda_sweep_risk(table: pd.DataFrame) -> Figure:
    """Single-λ jobs (``calibration.lambdas=[λ]``, one job per λ): pool risk vs λ."""
    single = table[table["n_lambdas"] == 1].sort_values("lambda_0")
    fig = Figure(figsize=(4.0, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(single["lambda_0"], single["pool_risk_0"], marker="o", ms=3,
            label="pool risk (one job per λ)")
    for a in sorted(single["alpha"].unique()):
        ax.axhline(a, color="C3", ls="--", lw=1, label=f"α = {a:g}")
    ax.set_xlabel("λ")
    ax.set_ylabel(f"pool risk ({', '.join(sorted(single['loss'].unique()))})")
    ax.legend(frameon=False)
    fig.suptitle(sweep_title(single, []))
    return fig


def _prepared(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a family name per job ("magnitude", "magnitude (layerwise)", "channel l1"),
    a series name (the varying axes besides loss and α; ``attrs["series"]`` lists them) and a
    colour per series."""
    series = _varying(table, SERIES_AXES)
    scope = np.where(table["scope"] == "global", "", " (" + table["scope"] + ")")
    family = table["criterion"] + scope
    if "structure" in table:
        channel = table["structure"].fillna("unstructured") == "channel"
        family = np.where(channel, "channel " + family, family)
    t = table.assign(_family=family)
    t = t.assign(_series=_series_names(t, series))
    names = sorted(t["_series"].unique())
    t = t.assign(_color=t["_series"].map({n: f"C{i % 10}" for i, n in enumerate(names)}))
    t.attrs["series"] = series
    return t


def _series_key(t: pd.DataFrame) -> list[Line2D]:
    """Legend handles naming each series by its colour (none for a single series)."""
    if not t.attrs["series"]:
        return []
    pairs = t[["_series", "_color"]].drop_duplicates().sort_values("_series")
    return [Line2D([], [], color=c, lw=2, label=n) for n, c in pairs.itertuples(index=False)]


def sweep_plots(table: pd.DataFrame) -> dict[str, Figure]:
    """The multirun's figures (stem → figure), drawn only where the swept axes make them
    meaningful: α swept → sparsity, coverage and test-risk histograms vs α; several pruning
    families → the criteria comparison; single-λ jobs → risk vs λ."""
    plots: dict[str, Figure] = {}
    if table["alpha"].nunique() > 1:
        plots["sparsity_vs_alpha"] = sparsity_vs_alpha(table)
        plots["coverage_vs_alpha"] = coverage_vs_alpha(table)
        plots["test_risk_hist_per_alpha"] = test_risk_hist_per_alpha(table)
    if _prepared(table)["_family"].nunique() > 1:
        plots["criteria_comparison"] = criteria_comparison(table)
    if "n_lambdas" in table and int((table["n_lambdas"] == 1).sum()) > 1:
        plots["lambda_sweep_risk"] = lambda_sweep_risk(table)
    return plots


def sweep_figures(table: pd.DataFrame, out_dir: Path) -> list[str]:
    """Write the multirun's figures (:func:`sweep_plots`) as PNG + PDF; returns the paths."""
    return [p for stem, fig in sweep_plots(table).items() for p in save_figure(fig, out_dir, stem)]


def main(argv: list[str] | None = None) -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(
        description="Aggregate a run or multirun directory into one table, and draw its figures.")
    parser.add_argument("sweep_dir",
                        help="a multirun directory (or any folder holding job outputs)")
    parser.add_argument("--out", help="output folder (default: <sweep_dir>/aggregate)")
    args = parser.parse_args(argv)
    table = collect(args.sweep_dir)
    out = Path(args.out or Path(args.sweep_dir) / "aggregate")
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    table.to_parquet(out / "results.parquet", index=False)
    figs = sweep_figures(table, out / "figures")
    print(f"{len(table)} jobs → {out / 'results.csv'}, {out / 'results.parquet'}, "
          f"{len(figs) // 2} figures in {out / 'figures'}")
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(table.drop(columns=["job_dir"]).to_string(index=False))
