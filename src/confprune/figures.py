"""Figures that name what they certify: one run's (risk vs λ, test-risk and λ̂ histograms,
first-layer heat map, risk vs cost, segmentation masks) and a multirun's
(``python -m confprune.figures <sweep dir>``: one table, then its figures), as PNG + PDF.

Every figure is a :class:`matplotlib.figure.Figure` built without pyplot and styled through
``matplotlib.rc_context``: importing this module neither picks a backend nor changes global
settings, so a job renders headless and a notebook shows the same figures inline. Titles carry
what a reader needs to judge a claim: model, data (and whether it is synthetic), loss, bound,
FWER procedure, criterion, α and δ.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import matplotlib
import numpy as np
import torch
from matplotlib.colors import LinearSegmentedColormap, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .pruning import PruningFamily
from .stats import IidValidation, SplitValidation

if TYPE_CHECKING:  # pandas is imported where the sweep tables are built, not by every run
    import pandas as pd

# Paper size: one column ≈ 3.4 in, two ≈ 7 in; fonts stay readable when the PDF is scaled to it.
STYLE = {"figure.dpi": 150, "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
         "legend.fontsize": 7, "figure.titlesize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7}
#: kept (light grey) → removed (dark red): the "removed at λ̂" panel of the heat map
REMOVED_CMAP = LinearSegmentedColormap.from_list("removed", ["#e6e6e6", "#b2182b"])

F = TypeVar("F", bound=Callable[..., Any])


def styled(build: F) -> F:
    """Decorator for a function that builds and returns a :class:`Figure` (or None): it runs
    under :data:`STYLE`, and the figure is laid out before the style is left (tick labels are
    created lazily at the first draw, which would otherwise happen outside the style)."""

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            fig = build(*args, **kwargs)
            if fig is not None:
                fig.draw_without_rendering()
            return fig

    return wrapper  # type: ignore[return-value]


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[str]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` atomically (a reader never sees half a figure);
    returns [png path, pdf path]. A figure made with pyplot is closed afterwards."""
    from .cache import atomic_write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with matplotlib.rc_context(STYLE):
        for ext in ("png", "pdf"):
            p = out_dir / f"{stem}.{ext}"
            atomic_write(p, lambda tmp, ext=ext: fig.savefig(tmp, format=ext, bbox_inches="tight"))
            paths.append(str(p))
    if getattr(fig.canvas, "manager", None) is not None:  # a caller's pyplot figure: free it
        import matplotlib.pyplot as plt

        plt.close(fig)
    return paths


@dataclass(frozen=True)
class RunLabel:
    """What every figure of a run names: who was pruned, on which data, certified how."""

    model: str
    dataset: str
    loss: str
    bound: str
    fwer: str
    criterion: str
    alpha: float
    delta: float
    scope: str = "global"
    structure: str = "unstructured"
    synthetic: bool = False

    def title(self) -> str:
        """Two lines: the model, data and pruning family; the loss, bound, FWER, α and δ."""
        data = f"{self.dataset} (SYNTHETIC data)" if self.synthetic else self.dataset
        scope = "" if self.scope == "global" else f" ({self.scope})"
        family = f"{self.structure} {self.criterion} pruning{scope}"
        return (f"{self.model} on {data} · {family}\n"
                f"loss {self.loss} · bound {self.bound} · FWER {self.fwer} · "
                f"α = {self.alpha:g}, δ = {self.delta:g}")


# --------------------------------------------------------------------------------------------
# Figures of one run


def _legend_below(fig: Figure, ax: Any, ncol: int = 2, extra: Any = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if extra is not None:
        more = extra.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)


@styled
def risk_vs_lambda(
    lambdas: np.ndarray, model_sparsity: np.ndarray, validation: SplitValidation,
    pool_risk: np.ndarray, lam_hat: float | None, label: RunLabel,
) -> Figure:
    """Calibration risk across splits (median, 5–95% band) and pool risk vs λ, with α, the
    median λ̂ over certifying splits, the deployed λ̂ and the model's sparsity (right axis).

    ``lambdas``, ``model_sparsity``, ``pool_risk``: shape (G',); ``validation`` must hold its
    calibration-risk table (G', S) (``validate_splits(..., keep_pvalues=True)``).
    """
    if validation.cal_risk_table is None:
        raise ValueError("risk_vs_lambda needs validation.cal_risk_table "
                         "(validate_splits(..., keep_pvalues=True))")
    cal = validation.cal_risk_table  # (G', S)
    alpha = validation.alpha
    fig = Figure(figsize=(4.8, 4.1), layout="constrained")
    ax = fig.subplots()
    lo, med, hi = np.quantile(cal, [0.05, 0.5, 0.95], axis=1)
    ax.fill_between(lambdas, lo, hi, color="C0", alpha=0.25, lw=0,
                    label="calibration risk, 5–95% over splits")
    ax.plot(lambdas, med, color="C0", lw=1.5, label="calibration risk, median over splits")
    ax.plot(lambdas, pool_risk, color="k", lw=0.8, ls=":", label="pool risk")
    ax.axhline(alpha, color="C3", lw=1, ls="--", label=f"α = {alpha:g}")
    certified = validation.lambda_index[validation.certified]
    if certified.size:
        ax.axvline(np.median(lambdas[certified]), color="C2", lw=1.6, ls=(0, (4, 2)), zorder=4,
                   label=f"median λ̂ over the {certified.size} of {validation.n_splits} splits "
                         "that certified")
    else:
        ax.plot([], [], " ", label=f"no split of {validation.n_splits} certified anything")
    if lam_hat is not None:
        ax.axvline(lam_hat, color="C1", lw=1.0, zorder=5, label=f"deployed λ̂ = {lam_hat:.2f}")
    else:
        ax.plot([], [], " ", label="deployment: nothing certified (dense model)")
    # Enough room for α and the dense model's risk; the curve may leave the top where it blows up.
    top = max(3 * alpha, 1.15 * float(max(hi[0], pool_risk[0])))
    ax.set_ylim(0, min(1.0, top))
    ax.set_xlim(lambdas[0], lambdas[-1])
    ax.set_xlabel("pruning ratio λ (fraction of the pruning pool removed)")
    ax.set_ylabel(f"risk ({label.loss})")
    ax2 = ax.twinx()
    ax2.plot(lambdas, model_sparsity, color="0.5", lw=0.8,
             label="sparsity of the whole model (right axis)")
    ax2.set_ylabel("sparsity of the whole model", color="0.4")
    ax2.set_ylim(0, 1)
    ax2.tick_params(axis="y", colors="0.4")
    ax.set_title(f"Risk vs pruning ratio: {validation.n_splits} splits, n_cal = {validation.n_cal}")
    _legend_below(fig, ax, ncol=2, extra=ax2)
    fig.suptitle(label.title())
    return fig


def risk_bin_edges(risks: np.ndarray, n_test: int, alpha: float, max_bins: int = 40) -> np.ndarray:
    """Histogram bin edges for test risks measured on ``n_test`` points.

    A mean of binary losses takes only the values k/n_test: the edges are multiples of 1/n_test
    (widened to m/n_test, m an integer, when more than ``max_bins`` bins would be needed), so
    every bin holds the same number of attainable values and none shows a spike that is only a
    binning artefact. One edge sits at (⌊α·n_test⌋ + 1)/n_test, the smallest attainable value
    above α, so a bin holds only risks ≤ α or only risks > α (bins are [left, right)).
    Risks that are not multiples of 1/n_test (a loss in [0, 1]) get ``max_bins`` equal bins
    with an edge at α (ours).

    Parameters
    ----------
    risks : (k,) test risks (NaN-free).
    Returns
    -------
    (B + 1,) increasing edges covering every risk.
    """
    risks = np.asarray(risks, dtype=np.float64)
    if risks.size == 0:
        return np.array([0.0, 1.0 / max(1, n_test)])
    counts = risks * n_test
    if n_test > 0 and np.allclose(counts, np.rint(counts), rtol=0, atol=1e-6):
        k = np.rint(counts).astype(np.int64)
        lo, hi = int(k.min()), int(k.max())
        m = max(1, math.ceil((hi - lo + 1) / max_bins))
        anchor = math.floor(alpha * n_test + 1e-9) + 1  # smallest k with k/n_test > α
        start = anchor - m * math.ceil((anchor - lo) / m)  # ≤ lo
        stop = anchor + m * (math.floor((hi - anchor) / m) + 1)  # > hi
        return np.arange(start, stop + 1, m, dtype=np.int64) / n_test
    lo, hi = float(risks.min()), float(risks.max())
    width = max(hi - lo, 1e-9) / max_bins
    first, last = math.floor((lo - alpha) / width), math.floor((hi - alpha) / width) + 1
    return alpha + width * np.arange(first, last + 1)


def _risk_bars(
    ax: Any, risks: np.ndarray, n_test: int, alpha: float
) -> tuple[np.ndarray, list[Patch]]:
    """Bars of the certified splits' test risks, blue where ≤ α and red where > α; returns the
    edges and one legend handle per side (an empty side keeps its entry, in its own colour)."""
    edges = risk_bin_edges(risks, n_test, alpha)
    counts, _ = np.histogram(risks, edges)
    left, width = edges[:-1], np.diff(edges)
    over = left > alpha  # every value in a bin is ≥ its left edge, and the bin holds one side of α
    n_over = int((risks > alpha).sum())
    handles = []
    for side, color, name in ((~over, "C0", f"test risk ≤ α: {risks.size - n_over} splits"),
                              (over, "C3", f"test risk > α (violation): {n_over} splits")):
        ax.bar(left[side], counts[side], width[side], align="edge", color=color, lw=0)
        handles.append(Patch(color=color, label=name))
    return edges, handles


@styled
def test_risk_histogram(
    validation: SplitValidation, iid: IidValidation | None, label: RunLabel
) -> Figure:
    """Test risk at λ̂ over the splits that certified, binned at multiples of 1/n_test; the
    title gives both checks: the exact i.i.d. check, which is what the guarantee
    P(R(λ̂) ≤ α) ≥ 1 − δ is about, and the split check, whose finite test set adds noise (its
    coverage can fall below 1 − δ while the guarantee holds)."""
    alpha, n_test = validation.alpha, validation.n_test
    fig = Figure(figsize=(4.8, 3.6), layout="constrained")
    ax = fig.subplots()
    risks = validation.test_risk[validation.certified]
    bar_handles: list[Patch] = []
    if risks.size:
        edges, bar_handles = _risk_bars(ax, risks, n_test, alpha)
        step = (edges[1] - edges[0]) * n_test
        binning = f"bins of 1/{n_test}" if np.isclose(step, 1) else f"bins of {step:.3g}/{n_test}"
    else:
        ax.text(0.5, 0.5, "no split certified anything", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xlim(0, 2 * alpha)
        ax.set_yticks([])
        binning = "no bins"
    ax.axvline(alpha, color="k", ls="--", lw=1, label=f"α = {alpha:g}")
    n_none = int((~validation.certified).sum())
    if n_none:
        ax.plot([], [], " ", label=f"{n_none} splits certified nothing (no claim: covered)")
    target = 1 - validation.delta
    lines = []
    if iid is not None:
        lo, hi = iid.coverage_interval()
        lines.append(f"guarantee P(R(λ̂) ≤ α) ≥ 1 − δ = {target:g}; exact i.i.d. check "
                     f"(true risk = pool risk): {iid.coverage:.3f} [{lo:.3f}, {hi:.3f}]")
    interval = validation.coverage_interval()
    if validation.coverage is not None and interval is not None:
        lines.append(f"split check, test risk on n_test = {n_test} points (adds test-set noise): "
                     f"{validation.coverage:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]")
    lines.append("coverage over splits, 95% Clopper–Pearson intervals")
    ax.set_title("\n".join(lines), fontsize=6.5)
    ax.set_xlabel(f"test risk at λ̂ ({label.loss}; n_test = {n_test}, {binning})")
    ax.set_ylabel("splits")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(bar_handles + handles, [h.get_label() for h in bar_handles] + labels, frameon=False,
              loc="best")
    fig.suptitle(label.title())
    return fig


@styled
def lambda_hat_histogram(lambdas: np.ndarray, validation: SplitValidation, lam_hat: float | None,
                         label: RunLabel) -> Figure:
    """How often each grid λ was certified over the splits (``lambdas``: (G',) evaluated grid),
    the deployed λ̂, and how many splits certified nothing."""
    fig = Figure(figsize=(4.8, 3.2), layout="constrained")
    ax = fig.subplots()
    idx = validation.lambda_index[validation.certified]
    width = float(np.min(np.diff(lambdas))) if lambdas.size > 1 else 0.01
    if idx.size:
        values, counts = np.unique(lambdas[idx], return_counts=True)
        ax.bar(values, counts, width=0.8 * width, color="C2", label="validation splits")
    if lam_hat is not None:
        ax.axvline(lam_hat, color="C1", lw=1.2, label=f"deployed λ̂ = {lam_hat:.2f}")
    else:
        ax.plot([], [], " ", label="deployment: nothing certified")
    ax.set_xlim(lambdas[0] - width, lambdas[-1] + width)  # the whole grid: a lone bar has context
    n_none = int((~validation.certified).sum())
    ax.set_title(f"certified λ̂ over {validation.n_splits} splits ({n_none} certified nothing)")
    ax.set_xlabel("λ̂ (largest certified grid point)")
    ax.set_ylabel("splits")
    ax.legend(frameon=False, loc="best")
    fig.suptitle(label.title())
    return fig


def _first_layer(model: torch.nn.Module, names: set[str]) -> str | None:
    """The first weight matrix or kernel (≥ 2 dimensions) of the model that the family prunes."""
    for name, p in model.named_parameters():
        if name in names and p.dim() >= 2:
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


def _as_image(t: np.ndarray) -> tuple[np.ndarray, str]:
    """A first-layer tensor as a 2-D image: a linear layer on 28×28 inputs per input pixel (mean
    over output units), conv kernels tiled (mean over input channels), else the matrix."""
    if t.ndim == 2 and t.shape[1] == 28 * 28:
        return t.mean(0).reshape(28, 28), f"per input pixel, mean over {t.shape[0]} output units"
    if t.ndim == 4:
        mean = "" if t.shape[1] == 1 else f", mean over {t.shape[1]} input channels"
        return _tile(t.mean(1)), f"{t.shape[0]} kernels {t.shape[2]}×{t.shape[3]}{mean}"
    t = t.reshape(t.shape[0], -1)
    return t, f"{t.shape[0]}×{t.shape[1]} matrix"


def _removal_lambda(
    family: PruningFamily, name: str, lambdas: np.ndarray
) -> tuple[np.ndarray, str]:
    """λ at which each entry of ``name`` is removed, and how it was found. A plain ranking gives
    it exactly (rank / group size); other families (SiPP hybrid, channels) are scanned on the
    evaluated grid (the first grid λ without the entry; entries never removed get 1)."""
    if hasattr(family, "ranks") and not hasattr(family, "factors"):
        group_size = family.group_sizes[family.group_of[name]]
        return family.ranks[name].cpu().numpy() / group_size, "λ at which it is removed"
    when: np.ndarray | None = None
    for lam in np.sort(lambdas):
        removed = ~family.masks(float(lam))[name].cpu().numpy()
        if when is None:
            when = np.ones(removed.shape)
        when = np.where(removed & (when == 1), lam, when)
    assert when is not None
    return when, "first grid λ without it (1: never)"


@styled
def first_layer_heatmap(model: torch.nn.Module, family: PruningFamily, lambdas: np.ndarray,
                        lam_hat: float | None, label: RunLabel) -> Figure | None:
    """The first pruned layer: |w|, the λ at which each weight is removed, and the weights that
    the deployed model removes at λ̂ (drawn from the family's own masks, so it is true for every
    criterion and structure). None when the family prunes no weight matrix or kernel."""
    name = _first_layer(model, set(family.parameter_names))
    if name is None:
        return None
    w = dict(model.named_parameters())[name].detach().abs().cpu().numpy()
    when, when_title = _removal_lambda(family, name, lambdas)
    mag, shape_note = _as_image(w)
    fig = Figure(figsize=(7.2, 2.9), layout="constrained")
    axes = fig.subplots(1, 3)
    im = axes[0].imshow(mag, cmap="viridis")
    axes[0].set_title(f"|w| of {name}")
    fig.colorbar(im, ax=axes[0], fraction=0.046, pad=0.03)
    im = axes[1].imshow(_as_image(when)[0], cmap="magma", vmin=0, vmax=1)
    axes[1].set_title(f"{when_title}\n(dark: removed first)")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.03)
    notes = [shape_note]
    if lam_hat is None:
        axes[2].text(0.5, 0.5,
                     "nothing certified:\nthe dense model is deployed,\nno weight is removed",
                     ha="center", va="center", transform=axes[2].transAxes)
        axes[2].set_title("removed at λ̂")
    else:
        removed = ~family.masks(float(lam_hat))[name].cpu().numpy()
        image, _ = _as_image(removed.astype(np.float64))
        # binary unless entries were averaged (input channels, output units)
        binary = bool(np.all(np.isnan(image) | (image == 0) | (image == 1)))
        cmap = ListedColormap(REMOVED_CMAP([0.0, 1.0])) if binary else REMOVED_CMAP
        im = axes[2].imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        axes[2].set_title(f"removed at the deployed λ̂ = {lam_hat:.2f}"
                          + ("" if binary else "\n(fraction removed)"))
        bar = fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.03)
        if binary:
            bar.set_ticks([0.25, 0.75], labels=["kept", "removed"])
        whole = "model" if family.structure == "channel" else "pruning pool"
        notes.append(f"{int(removed.sum())} of {removed.size} entries of {name} removed at λ̂ "
                     f"({removed.mean():.0%}; "
                     f"{family.sparsity(float(lam_hat)):.0%} of the {whole})")
        factors = getattr(family, "factors", None)
        if factors is not None:  # SiPP hybrid: the kept weights of sampled groups are rescaled
            f = factors(float(lam_hat))[name].cpu().numpy()
            reweighted = int(((f != 0) & (f != 1)).sum())
            notes.append(f"{reweighted} kept entries reweighted by count/(m·p)")
    if family.structure == "channel":
        notes.append("channel pruning removes whole output units "
                     "(kernel, bias, BatchNorm together)")
    elif not family.config.get("include_bias", True):
        why = " (SiPP has no sensitivity for biases)" if family.criterion.startswith("sipp") else ""
        notes.append(f"biases are outside the pruning pool{why}")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.supxlabel("\n".join(notes), fontsize=6.5)
    fig.suptitle(label.title())
    return fig


def _cost_ylim(risk: np.ndarray, alpha: float) -> float:
    """Top of a risk axis: α and the dense risk with room; steeper tails leave the axis."""
    return min(1.0, max(3 * alpha, 1.3 * float(risk[0])))


@styled
def risk_vs_cost(
    pool_risk: np.ndarray, cost: Mapping[str, Any], lam_hat: float | None, label: RunLabel
) -> Figure | None:
    """Pool risk against what the pruned model costs: multiply-adds per sample (left) and
    measured CPU latency (right), the dense and the certified model marked. ``pool_risk``: (G',);
    ``cost``: the run's cost profile (``curve``, ``dense``, ``deploy``, ``latency``, ``machine``).
    None without a cost curve."""
    curve = cost.get("curve") or {}
    if not curve:
        return None
    lambdas = np.asarray(curve["lambda"])
    risk = np.asarray(pool_risk[: lambdas.size])
    alpha = label.alpha
    channel = label.structure == "channel"
    key = "macs" if channel else "nonzero_macs"
    top = _cost_ylim(risk, alpha)
    fig = Figure(figsize=(7.2, 3.4), layout="constrained")
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
    ax = axes[0]
    macs = np.asarray(curve[key]) / 1e6
    ax.plot(macs, risk, color="C0", lw=1.2, marker=".", ms=3, label="pool risk at each grid λ")
    dense_macs = cost["dense"]["macs"] / 1e6
    ax.plot([dense_macs], [risk[0]], "s", color="k", ms=5, label="dense")
    j_hat = int(np.argmin(np.abs(lambdas - lam_hat))) if lam_hat is not None else None
    if j_hat is not None and cost.get("deploy"):
        ax.plot([cost["deploy"][key] / 1e6], [risk[j_hat]], "*", color="C1", ms=11, zorder=5,
                label=f"certified, λ̂ = {lam_hat:.2f}")
    elif lam_hat is None:
        ax.plot([], [], " ", label="nothing certified: the dense model is deployed")
    ax.axhline(alpha, color="C3", ls="--", lw=1, label=f"α = {alpha:g}")
    off = np.flatnonzero(risk > top)
    if off.size:  # say where the curve went instead of letting it vanish
        ax.set_title(f"pool risk > {top:.2g} (off the axis) from λ = {lambdas[off[0]]:.2f} on",
                     fontsize=6.5, color="C0")
    ax.set_xlabel("MACs per sample (millions)" if channel
                  else "nonzero MACs per sample (millions;\ndense kernels still run all of them)")
    ax.set_ylabel(f"pool risk ({label.loss})")
    ax.set_ylim(0, top)
    ax.set_xlim(left=0)
    ax.legend(frameon=False, loc="best")
    _latency_panel(axes[1], cost, lambdas, risk, lam_hat)
    fig.suptitle(label.title())
    return fig


def _latency_panel(ax: Any, cost: Mapping[str, Any], lambdas: np.ndarray, risk: np.ndarray,
                   lam_hat: float | None) -> None:
    """Measured latency per sample, one row per measured model (a forest plot: nothing overlaps
    however close the latencies are), one marker per batch size, each row naming its pool risk."""
    points = sorted((p for p in cost.get("latency", []) if p),
                    key=lambda p: -1.0 if p["lambda"] is None else p["lambda"])
    if not points:
        ax.text(0.5, 0.5, "latency not measured (cost.latency=false)", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    batches = sorted((k for k in points[0] if k.startswith("batch_")),
                     key=lambda k: int(k.split("_")[1]))
    markers = "osD^v"
    names, colors = [], []
    for row, p in enumerate(points):
        lam = p["lambda"]
        j = 0 if lam is None else int(np.argmin(np.abs(lambdas - lam)))
        certified = lam is not None and lam_hat is not None and bool(np.isclose(lam, lam_hat))
        who = ("dense" if lam is None else f"λ̂ = {lam:.2f}, certified" if certified
               else f"λ = {lam:.2f}")
        names.append(f"{who}\nrisk {risk[j]:.3f}")
        colors.append("C1" if certified else "k" if lam is None else "C0")
        for b, (batch, marker) in enumerate(zip(batches, markers, strict=False)):
            size = int(batch.split("_")[1])
            med, lo, hi = (1e3 * p[batch][k] / size for k in ("median_s", "p10_s", "p90_s"))
            y = row + 0.25 * (b - (len(batches) - 1) / 2)  # batch sizes side by side in a row
            ax.errorbar([med], [y], xerr=[[max(med - lo, 0)], [max(hi - med, 0)]], fmt=marker,
                        color=colors[-1], ms=4, capsize=2, mfc="none" if b else colors[-1])
    for b, (batch, marker) in enumerate(zip(batches, markers, strict=False)):
        ax.plot([], [], marker, color="0.3", mfc="none" if b else "0.3", label=batch.split("_")[1])
    ax.set_yticks(range(len(points)), names, fontsize=6.5)
    for tick, color in zip(ax.get_yticklabels(), colors, strict=True):
        tick.set_color(color)
    ax.set_ylim(len(points) - 0.5, -0.5)  # dense on top, then increasing λ
    low, high = ax.dataLim.x0, ax.dataLim.x1
    if low > 0 and high / low > 10:  # batch sizes (or noisy repeats) an order of magnitude apart
        ax.set_xscale("log")
    ax.set_xlabel("CPU latency per sample (ms; median and 10–90% over repeats)")
    cpu = cost.get("machine", {}).get("cpu", "this CPU")[:40]
    threads = points[0][batches[-1]].get("threads")
    ax.set_title(f"measured on {cpu}, {threads} thread(s)", fontsize=6.5)
    ax.margins(x=0.1)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="batch",
              title_fontsize=6.5)


@styled
def mask_panel(
    model: torch.nn.Module, family: PruningFamily, inputs: torch.Tensor, targets: torch.Tensor,
    lambdas: np.ndarray, pool_risk: np.ndarray, lam_hat: float | None, label: RunLabel, n: int = 4,
) -> Figure:
    """Segmentation: image, ground truth, dense mask, pruned mask at λ̂ and at a much larger λ
    (the first grid point whose pool risk is ≥ 0.5, else the last), for a few pool images
    (inputs (N, C, H, W), targets (N, 1, H, W))."""
    from .forward import forward_batched

    has_polyp = torch.nonzero(targets.flatten(1).sum(1) > 0).flatten()
    if len(has_polyp):
        pick = has_polyp[torch.linspace(0, len(has_polyp) - 1, min(n, len(has_polyp))).long()]
    else:
        pick = torch.arange(min(n, len(inputs)))
    x, y = inputs[pick], targets[pick]
    big = np.flatnonzero(pool_risk >= 0.5)
    lam_big = float(lambdas[big[0]] if big.size else lambdas[-1])
    params = dict(model.named_parameters())
    columns: list[tuple[str, float | None]] = [("image", None), ("ground truth", None),
                                               ("dense", 0.0)]
    if lam_hat is not None:
        columns.append((f"pruned, λ̂ = {lam_hat:.2f}\n(certified)", lam_hat))
    columns.append((f"pruned, λ = {lam_big:.2f}\n(not certified)", lam_big))
    preds = {}
    for _, lam in columns[2:]:
        weights = {**dict(model.named_buffers()), **family.apply(params, lam)} if lam else None
        preds[lam] = torch.cat(forward_batched(model, x, weights)) > 0
    fig = Figure(figsize=(1.6 * len(columns), 1.6 * len(pick) + 0.6), layout="constrained")
    axes = fig.subplots(len(pick), len(columns), squeeze=False)
    for r in range(len(pick)):
        img = x[r].permute(1, 2, 0).cpu().numpy()
        img = (img - img.min()) / (img.max() - img.min() + 1e-8)
        for c, (title, lam) in enumerate(columns):
            ax = axes[r][c]
            if c == 0:
                ax.imshow(img)
            elif c == 1:
                ax.imshow(y[r, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(preds[lam][r, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
    fig.suptitle(label.title(), fontsize=6.5)
    return fig


#: extra per-run figures by task: stem → builder with mask_panel's signature
TASK_FIGURES: dict[str, dict[str, Callable[..., Figure | None]]] = {
    "segmentation": {"mask_panel": mask_panel},
}


# --------------------------------------------------------------------------------------------
# Aggregation of a multirun: `python -m confprune.figures <sweep dir>`

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
    from .record import read_splits

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

    ``sparsity_hat_median`` is the summary's median over the splits that certified;
    ``sparsity_all_*`` are the median and 5%/95% quantiles over *all* splits with an uncertified
    split counted as sparsity 0 (from each job's ``splits.csv``, see :func:`split_sparsity`).
    """
    import pandas as pd

    from .record import SUMMARY, read_summary

    rows = []
    for summary_path in sorted(Path(sweep_dir).rglob(SUMMARY)):
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
            top.plot(m["alpha"], m["sparsity_all_median"], marker="o", ms=3, color=color)
            deployed = g["sparsity_hat_deploy"].astype(float)
            ok = deployed.notna()
            top.plot(g["alpha"][ok] + dodge, deployed[ok], "D", mfc="none", color=color, ms=5)
            top.plot(g["alpha"][~ok] + dodge, np.zeros(int((~ok).sum())), "x", color=color, ms=6,
                     mew=1.5)
            bottom.plot(m["alpha"], m["certified_fraction"], marker="o", ms=3, color=color)
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
    for ax, (loss, sub) in zip(axes[0], groups, strict=True):
        for _, g in sub.groupby("_series", sort=True):
            color = g["_color"].iloc[0]
            m = _mean_by_alpha(g, ["coverage", "coverage_lo", "coverage_hi", "iid_coverage",
                                   "iid_coverage_lo", "iid_coverage_hi"])
            ax.errorbar(m["alpha"], m["iid_coverage"],
                        yerr=_yerr(m["iid_coverage"], m["iid_coverage_lo"], m["iid_coverage_hi"]),
                        marker="o", ms=3, capsize=2, color=color)
            ax.errorbar(m["alpha"] * 1.01, m["coverage"],
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
    from .record import read_splits

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


if __name__ == "__main__":
    main()
