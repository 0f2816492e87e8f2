"""Figures of one run (PNG + PDF): risk vs λ, test-risk and λ̂ histograms, first-layer heat map;
and ``python -m confprune.figures <sweep dir>``, which aggregates a multirun into one table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .pruning import PruningFamily  # noqa: E402
from .stats import SplitValidation  # noqa: E402

if TYPE_CHECKING:  # pandas is imported where the sweep tables are built, not by every run
    import pandas as pd

    from .api import CertifiedPruning

# Paper size: one column ≈ 3.4 in; fonts stay readable when the PDF is scaled to it.
plt.rcParams.update(
    {"figure.dpi": 150, "savefig.bbox": "tight", "font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7.5}
)


def _save(fig: plt.Figure, out_dir: Path, stem: str) -> list[str]:
    """PNG and PDF, each written atomically (a reader never sees half a figure)."""
    from .cache import atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = out_dir / f"{stem}.{ext}"
        atomic_write(p, lambda tmp, ext=ext: fig.savefig(tmp, format=ext))
        paths.append(str(p))
    plt.close(fig)
    return paths


def risk_vs_lambda(
    lambdas: np.ndarray,
    model_sparsity: np.ndarray,
    validation: SplitValidation,
    cert: CertifiedPruning,
    pool_risk: np.ndarray,
    loss_name: str,
    out_dir: Path,
) -> list[str]:
    """Calibration risk across splits (median and 5–95% band) vs λ, α, λ̂ markers, sparsity."""
    assert validation.cal_risk_table is not None
    cal = validation.cal_risk_table  # (G', S)
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    lo, med, hi = np.quantile(cal, [0.05, 0.5, 0.95], axis=1)
    ax.fill_between(lambdas, lo, hi, color="C0", alpha=0.25, lw=0, label="calibration risk, 5–95% over splits")
    ax.plot(lambdas, med, color="C0", lw=1.5, label="calibration risk, median")
    ax.plot(lambdas, pool_risk, color="k", lw=0.8, ls=":", label="pool risk")
    ax.axhline(validation.alpha, color="C3", lw=1, ls="--", label=f"α = {validation.alpha:g}")
    certified = validation.lambda_index[validation.certified]
    if certified.size:
        ax.axvline(np.median(lambdas[certified]), color="C2", lw=1, ls="-.", label="median λ̂ over splits")
    if cert.certified:
        ax.axvline(cert.lambda_hat, color="C1", lw=1.2, label=f"deployed λ̂ = {cert.lambda_hat:.2f}")
    top = max(3 * validation.alpha, float(np.nanmax(hi[: max(1, int(np.searchsorted(hi, 3 * validation.alpha)))])))
    ax.set_ylim(0, min(1.0, top))
    ax.set_xlabel("pruning ratio λ (fraction of the pool removed)")
    ax.set_ylabel(f"risk ({loss_name})")
    ax.set_xlim(lambdas[0], lambdas[-1])
    ax2 = ax.twinx()
    ax2.plot(lambdas, model_sparsity, color="0.5", lw=0.8, label="model sparsity (right axis)")
    ax2.set_ylabel("sparsity of the whole model", color="0.4")
    ax2.set_ylim(0, 1)
    ax2.tick_params(axis="y", colors="0.4")
    handles = ax.get_legend_handles_labels()
    extra = ax2.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper left", frameon=False)
    ax.set_title(f"Risk vs pruning ratio ({validation.n_splits} splits, n_cal = {validation.n_cal})")
    return _save(fig, out_dir, "risk_vs_lambda")


def risk_vs_cost(
    pool_risk: np.ndarray, cost: dict, lam_hat: float | None, alpha: float, loss_name: str, family: PruningFamily,
    out_dir: Path,
) -> list[str]:
    """Pool risk against what the pruned model costs: multiply-adds per sample (left) and measured
    CPU latency (right), with the dense model and the certified model marked."""
    curve = cost.get("curve") or {}
    if not curve:
        return []
    lambdas = np.asarray(curve["lambda"])
    risk = np.asarray(pool_risk[: lambdas.size])
    channel = getattr(family, "structure", "unstructured") == "channel"
    key = "macs" if channel else "nonzero_macs"
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.0), constrained_layout=True)
    ax = axes[0]
    macs = np.asarray(curve[key]) / 1e6
    ax.plot(macs, risk, color="C0", lw=1.2, label="pool risk (grid)")
    dense_macs = cost["dense"]["macs"] / 1e6
    ax.plot([dense_macs], [risk[0]], "s", color="k", ms=5, label="dense")
    if lam_hat is not None and cost.get("deploy"):
        j = int(np.argmin(np.abs(lambdas - lam_hat)))
        ax.plot([cost["deploy"][key] / 1e6], [risk[j]], "*", color="C1", ms=10, label=f"certified, λ̂ = {lam_hat:.2f}")
    ax.axhline(alpha, color="C3", ls="--", lw=1, label=f"α = {alpha:g}")
    ax.set_xlabel("MACs per sample (millions)" if channel else "nonzero MACs per sample (millions; dense kernels run all)")
    ax.set_ylabel(f"pool risk ({loss_name})")
    ax.set_ylim(0, min(1.0, max(3 * alpha, float(risk[np.searchsorted(-macs, -dense_macs * 0.02)] if macs.size else 0))))
    ax.legend(frameon=False, fontsize=7)
    ax = axes[1]
    points = [p for p in cost.get("latency", []) if p]
    if points:
        batch_key = max((k for k in points[0] if k.startswith("batch_")), key=lambda k: int(k.split("_")[1]))
        for p in points:
            lam = p["lambda"]
            j = 0 if lam is None else int(np.argmin(np.abs(lambdas - lam)))
            ms = 1e3 * p[batch_key]["median_s"]
            err = 1e3 * np.array([[p[batch_key]["median_s"] - p[batch_key]["p10_s"]], [p[batch_key]["p90_s"] - p[batch_key]["median_s"]]])
            style = ("s", "k", "dense") if lam is None else ("*", "C1", f"certified, λ̂ = {lam:.2f}") if lam == lam_hat else ("o", "C0", None)
            ax.errorbar([ms], [risk[j]], xerr=np.clip(err, 0, None), fmt=style[0], color=style[1], ms=7 if style[0] == "*" else 4,
                        capsize=2, label=style[2])
            if lam is not None and lam != lam_hat:
                ax.annotate(f"λ={lam:.2f}", (ms, risk[j]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.axhline(alpha, color="C3", ls="--", lw=1)
        ax.set_xlabel(f"CPU latency, {batch_key.replace('_', ' ')} (ms; median, 10–90%)")
        threads = points[0][batch_key].get("threads")
        ax.set_title(f"measured on {cost['machine'].get('cpu', 'this CPU')[:40]}, {threads} thread(s)", fontsize=6.5)
        ax.legend(frameon=False, fontsize=7)
    else:
        ax.text(0.5, 0.5, "latency not measured (cost.latency=false)", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    fig.suptitle(f"Risk vs cost — {family.criterion}/{family.scope}, {getattr(family, 'structure', 'unstructured')} pruning",
                 fontsize=8.5)
    return _save(fig, out_dir, "risk_vs_cost")


def test_risk_histogram(validation: SplitValidation, out_dir: Path) -> list[str]:
    fig, ax = plt.subplots(figsize=(3.6, 2.6))
    risks = validation.test_risk[validation.certified]
    if risks.size:
        ax.hist(risks, bins=30, color="C0", alpha=0.8)
    ax.axvline(validation.alpha, color="C3", ls="--", label=f"α = {validation.alpha:g}")
    lo, hi = validation.coverage_interval()
    ax.set_title(f"coverage {validation.coverage:.3f} [{lo:.3f}, {hi:.3f}] (target ≥ {1 - validation.delta:g})")
    ax.set_xlabel(f"test risk at λ̂ (n_test = {validation.n_test})")
    ax.set_ylabel("splits")
    ax.legend(frameon=False)
    return _save(fig, out_dir, "test_risk_hist")


def lambda_hat_histogram(lambdas: np.ndarray, validation: SplitValidation, out_dir: Path) -> list[str]:
    fig, ax = plt.subplots(figsize=(3.6, 2.6))
    idx = validation.lambda_index[validation.certified]
    if idx.size:
        values, counts = np.unique(lambdas[idx], return_counts=True)
        width = np.min(np.diff(lambdas)) if lambdas.size > 1 else 0.01
        ax.bar(values, counts, width=0.9 * width, color="C2")
    n_none = int((~validation.certified).sum())
    ax.set_title(f"certified λ̂ over {validation.n_splits} splits ({n_none} certified nothing)")
    ax.set_xlabel("λ̂")
    ax.set_ylabel("splits")
    return _save(fig, out_dir, "lambda_hat_hist")


def _first_layer(family: PruningFamily, model: torch.nn.Module) -> str | None:
    for name, p in model.named_parameters():
        if name in family.ranks and p.dim() >= 2:
            return name
    return None


def _tile(kernels: np.ndarray) -> np.ndarray:
    """(n, kh, kw) → a near-square mosaic with one-pixel NaN gaps between kernels."""
    n, kh, kw = kernels.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    canvas = np.full((rows * (kh + 1) - 1, cols * (kw + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[r * (kh + 1) : r * (kh + 1) + kh, c * (kw + 1) : c * (kw + 1) + kw] = kernels[i]
    return canvas


def first_layer_heatmap(model: torch.nn.Module, family: PruningFamily, lam_hat: float | None, out_dir: Path) -> list[str]:
    """|w| of the first layer beside the λ at which each weight is pruned (low = removed first).

    A linear layer on 28×28 inputs is shown per input pixel (mean over output units); conv kernels
    are tiled (mean over input channels).
    """
    if getattr(family, "structure", "unstructured") != "unstructured" or not hasattr(family, "ranks"):
        return []  # the heat map shows per-weight ranks; a channel family ranks whole units
    name = _first_layer(family, model)
    if name is None:
        return []
    w = dict(model.named_parameters())[name].detach().abs().cpu().numpy()
    group = family.group_of[name]
    # λ at which an entry is pruned: the smallest λ with round(λ·P) > rank, ≈ rank / P.
    prune_at = family.ranks[name].cpu().numpy() / family.group_sizes[group]
    if w.ndim == 2 and w.shape[1] == 28 * 28:
        mag, when = w.mean(0).reshape(28, 28), prune_at.mean(0).reshape(28, 28)
        subtitle = "mean over output units per input pixel"
    elif w.ndim == 4:
        mag, when = _tile(w.mean(1)), _tile(prune_at.mean(1))
        subtitle = f"{w.shape[0]} kernels {w.shape[2]}×{w.shape[3]}, mean over {w.shape[1]} input ch."
    else:
        mag, when = w, prune_at
        subtitle = f"{w.shape[0]}×{w.shape[1]} matrix"
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
    im0 = axes[0].imshow(mag, cmap="viridis")
    axes[0].set_title(f"|w| of {name}")
    fig.colorbar(im0, ax=axes[0], fraction=0.046, pad=0.03)
    im1 = axes[1].imshow(when, cmap="magma", vmin=0, vmax=1)
    axes[1].set_title("λ at which it is pruned (dark: first)")
    fig.colorbar(im1, ax=axes[1], fraction=0.046, pad=0.03)
    caption = subtitle
    if lam_hat is not None:
        axes[1].contour(np.nan_to_num(when, nan=1.0) <= lam_hat, levels=[0.5], colors="c", linewidths=0.7)
        caption += f"; cyan outline: removed at the certified λ̂ = {lam_hat:.2f}"
    fig.text(0.5, 0.02, caption, ha="center", fontsize=7.5)
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    return _save(fig, out_dir, "first_layer_heatmap")


def mask_panel(model: torch.nn.Module, family: PruningFamily, inputs: torch.Tensor, targets: torch.Tensor,
               lambdas: np.ndarray, pool_risk: np.ndarray, lam_hat: float | None, out_dir: Path, n: int = 4) -> list[str]:
    """Segmentation: image, ground truth, dense mask, pruned mask at λ̂ and at a much larger λ
    (the first grid point whose pool risk is ≥ 0.5, else the last), for a few pool images."""
    from .forward import forward_batched

    has_polyp = torch.nonzero(targets.flatten(1).sum(1) > 0).flatten()
    pick = has_polyp[torch.linspace(0, len(has_polyp) - 1, min(n, len(has_polyp))).long()] if len(has_polyp) else torch.arange(min(n, len(inputs)))
    x, y = inputs[pick], targets[pick]
    big = np.flatnonzero(pool_risk >= 0.5)
    lam_big = float(lambdas[big[0]] if big.size else lambdas[-1])
    params = dict(model.named_parameters())
    columns = [("image", None), ("ground truth", None), ("dense", 0.0)]
    if lam_hat is not None:
        columns.append((f"pruned, λ̂ = {lam_hat:.2f}", lam_hat))
    columns.append((f"pruned, λ = {lam_big:.2f}", lam_big))
    preds = {}
    for _, lam in columns[2:]:
        weights = {**dict(model.named_buffers()), **family.apply(params, lam)} if lam else None
        preds[lam] = torch.cat(forward_batched(model, x, weights)) > 0
    fig, axes = plt.subplots(len(pick), len(columns), figsize=(1.6 * len(columns), 1.6 * len(pick)), squeeze=False,
                             constrained_layout=True)
    for r in range(len(pick)):
        img = x[r].permute(1, 2, 0).numpy()
        img = (img - img.min()) / (img.max() - img.min() + 1e-8)
        for c, (title, lam) in enumerate(columns):
            ax = axes[r][c]
            if c == 0:
                ax.imshow(img)
            elif c == 1:
                ax.imshow(y[r, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(preds[lam][r, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
    return _save(fig, out_dir, "mask_panel")


#: extra per-run figures by task (same signature as mask_panel)
TASK_FIGURES = {"segmentation": (mask_panel,)}


# --------------------------------------------------------------------------------------------
# Aggregation of a multirun: `python -m confprune.figures <sweep dir>`

SUMMARY_COLUMNS = [
    "experiment", "model", "dataset", "loss", "bound", "fwer", "criterion", "scope", "seed", "alpha",
    "delta", "n_cal", "n_test", "n_splits", "dense_accuracy", "lambda_hat_median", "lambda_hat_deploy",
    "sparsity_hat_median", "sparsity_hat_deploy", "coverage", "coverage_lo", "coverage_hi",
    "iid_coverage", "violations", "certified_fraction", "n_lambdas", "lambda_0",
    "pool_risk_0", "job_dir",
]


def collect(sweep_dir: str | Path) -> pd.DataFrame:
    """One tidy row per finished job (a directory with summary.json) under ``sweep_dir``."""
    import pandas as pd

    from .record import SUMMARY, read_summary

    rows = []
    for summary_path in sorted(Path(sweep_dir).rglob(SUMMARY)):
        s = read_summary(summary_path)
        rows.append(
            {
                **{k: getattr(s, k) for k in ("experiment", "model", "dataset", "loss", "bound", "fwer", "criterion",
                                              "scope", "seed", "alpha", "delta", "n_cal", "n_test", "n_splits",
                                              "coverage", "iid_coverage", "violations",
                                              "certified_fraction")},
                "dense_accuracy": s.dense.get("accuracy"),
                "lambda_hat_median": s.lambda_hat.median,
                "lambda_hat_deploy": s.lambda_hat.deploy,
                "sparsity_hat_median": s.sparsity_hat.median,
                "sparsity_hat_deploy": s.sparsity_hat.deploy,
                "coverage_lo": s.coverage_ci[0] if s.coverage_ci else None,
                "coverage_hi": s.coverage_ci[1] if s.coverage_ci else None,
                "n_lambdas": len(s.lambdas),
                "lambda_0": s.lambdas[0] if s.lambdas else None,
                "pool_risk_0": s.pool_risk[0] if s.pool_risk else None,
                "job_dir": str(summary_path.parent),
            }
        )
    if not rows:
        raise FileNotFoundError(f"no summary.json under {sweep_dir}: is it a (finished) run or multirun directory?")
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _varying(table: pd.DataFrame, cols: list[str]) -> list[str]:
    return [c for c in cols if c in table and table[c].nunique(dropna=False) > 1]


def _panels(table: pd.DataFrame, by: str | None):
    return [(None, table)] if by is None else list(table.groupby(by, sort=True))


def sweep_figures(table: pd.DataFrame, out_dir: Path) -> list[str]:
    """Figures of a multirun, drawn only where the swept axes make them meaningful."""
    from .record import read_splits

    made: list[str] = []
    series = _varying(table, ["model", "bound", "criterion", "scope", "fwer", "delta"])
    table = table.assign(_series=table[series].astype(str).agg(", ".join, axis=1) if series else "all")
    hue = "_series"
    panel = "loss" if table["loss"].nunique() > 1 else None
    if table["alpha"].nunique() > 1:
        for metric, ylabel, stem in (
            ("sparsity_hat_median", "certified sparsity (median over splits)", "sparsity_vs_alpha"),
            ("coverage", "coverage (test risk ≤ α)", "coverage_vs_alpha"),
        ):
            groups = _panels(table, panel)
            fig, axes = plt.subplots(1, len(groups), figsize=(3.4 * len(groups), 3.0), squeeze=False,
                                     sharey=True, constrained_layout=True)
            for ax, (pname, sub) in zip(axes[0], groups, strict=True):
                for name, g in sub.groupby(hue):
                    g = g.groupby("alpha", as_index=False).agg(
                        y=(metric, "mean"), lo=("coverage_lo", "mean"), hi=("coverage_hi", "mean"),
                        iid=("iid_coverage", "mean"),
                    )
                    label = str(name)
                    if metric == "coverage":
                        ax.errorbar(g["alpha"], g["y"], yerr=[g["y"] - g["lo"], g["hi"] - g["y"]], marker="o", ms=3, capsize=2, label=label)
                        ax.plot(g["alpha"], g["iid"], ls=":", marker="x", ms=3, color=ax.lines[-1].get_color(), label=f"{label} (i.i.d. exact)")
                    else:
                        ax.plot(g["alpha"], g["y"], marker="o", ms=3, label=label)
                if metric == "coverage":
                    ax.axhline(1 - table["delta"].iloc[0], color="C3", ls="--", lw=1, label="1 − δ")
                ax.set_xlabel("α")
                ax.set_title("" if pname is None else f"loss = {pname}")
            axes[0][0].set_ylabel(ylabel)
            handles, labels = axes[0][0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False, fontsize=6.5,
                       title=", ".join(series) if series else None, title_fontsize=6.5)
            made += _save(fig, out_dir, stem)
        # Test-risk histograms per α (from each job's splits.csv).
        alphas = sorted(table["alpha"].unique())
        fig, axes = plt.subplots(1, len(alphas), figsize=(2.6 * len(alphas), 2.4), squeeze=False, constrained_layout=True)
        for ax, a in zip(axes[0], alphas, strict=True):
            for job in table.loc[table["alpha"] == a, "job_dir"]:
                risks = read_splits(job)["test_risk"]
                risks = risks[~np.isnan(risks)]
                ax.hist(risks, bins=25, histtype="step", lw=0.8)
            ax.axvline(a, color="C3", ls="--", lw=1)
            ax.set_title(f"α = {a:g}")
            ax.set_xlabel("test risk at λ̂")
        axes[0][0].set_ylabel("splits")
        made += _save(fig, out_dir, "test_risk_hist_per_alpha")
    family = table["criterion"] + np.where(table["scope"] == "global", "", " (" + table["scope"] + ")")
    if family.nunique() > 1:
        t = table.assign(_family=family)
        groups = _panels(t, panel)
        fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 3.0), squeeze=False, sharey=True,
                                 constrained_layout=True)
        names = sorted(t["_family"].unique())
        alphas = sorted(t["alpha"].unique())
        width = 0.8 / len(names)
        for ax, (pname, sub) in zip(axes[0], groups, strict=True):
            g = sub.groupby(["_family", "alpha"])["sparsity_hat_median"].mean()
            for i, name in enumerate(names):
                ax.bar(np.arange(len(alphas)) + i * width, [g.get((name, a), np.nan) for a in alphas], width=width,
                       label=name)
            ax.set_xticks(np.arange(len(alphas)) + 0.4 - width / 2)
            ax.set_xticklabels([f"α={a:g}" for a in alphas])
            ax.set_title("" if pname is None else f"loss = {pname}")
        axes[0][0].set_ylabel("certified sparsity (median over splits)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False, fontsize=7)
        made += _save(fig, out_dir, "criteria_comparison")
    single = table[table["n_lambdas"] == 1] if "n_lambdas" in table else table.iloc[0:0]
    if len(single) > 1:
        single = single.sort_values("lambda_0")
        fig, ax = plt.subplots(figsize=(3.8, 2.8))
        ax.plot(single["lambda_0"], single["pool_risk_0"], marker="o", ms=3, label="pool risk (one job per λ)")
        ax.axhline(table["alpha"].iloc[0], color="C3", ls="--", lw=1, label=f"α = {table['alpha'].iloc[0]:g}")
        ax.set_xlabel("λ")
        ax.set_ylabel(f"risk ({single['loss'].iloc[0]})")
        ax.legend(frameon=False)
        made += _save(fig, out_dir, "lambda_sweep_risk")
    return made


def main(argv: list[str] | None = None) -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description="Aggregate a run or multirun directory into one table.")
    parser.add_argument("sweep_dir", help="a multirun directory (or any folder holding job outputs)")
    parser.add_argument("--out", help="output folder (default: <sweep_dir>/aggregate)")
    args = parser.parse_args(argv)
    table = collect(args.sweep_dir)
    out = Path(args.out or Path(args.sweep_dir) / "aggregate")
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    table.to_parquet(out / "results.parquet", index=False)
    figs = sweep_figures(table, out / "figures")
    print(f"{len(table)} jobs → {out / 'results.csv'}, {out / 'results.parquet'}, {len(figs) // 2} figures in {out / 'figures'}")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.drop(columns=["job_dir"]).to_string(index=False))


if __name__ == "__main__":
    main()
