"""The figures of one run: risk vs λ, the test-risk and λ̂ histograms, the first-layer heat
map, risk vs cost (MACs and measured latency), segmentation masks, and :data:`TASK_FIGURES`, the
extra figures per task; each title names the model, data, loss, bound, FWER, criterion, α and δ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..pruning import PruningFamily
from ..stats import IidValidation, SplitValidation
from .style import REMOVED_CMAP, RunLabel, _legend_below, styled


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
        ax.bar(values, counts, width=0.8 * width, color="C2", label="validation splits", zorder=2)
    if lam_hat is not None:  # behind the bars, dashed, with a marker on top: a bar at λ̂ stays visible
        ax.axvline(lam_hat, color="C1", lw=1.2, ls=(0, (4, 2)), zorder=1, label=f"deployed λ̂ = {lam_hat:.2f}")
        ax.plot([lam_hat], [1.0], "v", color="C1", ms=6, transform=ax.get_xaxis_transform(), clip_on=False,
                zorder=3)
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
    when, when_title = family.removal_lambda(name, lambdas)
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
        notes.append(f"{int(removed.sum())} of {removed.size} entries of {name} removed at λ̂ "
                     f"({removed.mean():.0%}; "
                     f"{family.sparsity(float(lam_hat)):.0%} of the {family.sparsity_of})")
    notes.extend(family.figure_notes(lam_hat))
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
    key = cost.get("kind", "nonzero_macs")
    channel = key == "macs"
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
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")  # labels at 1-2-5 of each decade, plain numbers; minor ticks unlabelled
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor-tick labels overprinted each other
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
    from ..forward import forward_batched

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
