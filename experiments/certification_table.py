"""Certification table (issue 15): what the naive plug-in choice of λ risks, next to LTT's certificate.

For each finished run (one per model and loss; every α comes from its cached loss table) and each
α: the oracle sparsity (pool risk ≤ α at every λ' ≤ λ), the certified sparsity over the run's random
splits (median, 5–95 %, fraction certified; recomputed with ``validate_splits`` on the run's own
splits, checked equal to its ``splits.csv`` at the run's α), the naive plug-in sparsity, and two
violation rates for the naive and for the certified choice:

- **i.i.d.** (the exact check): calibration sets drawn i.i.d. from the pool, a violation when the
  pool risk — the true risk under these draws — at the chosen λ exceeds α. This is the quantity the
  guarantee bounds by δ.
- **held-out**: on the run's random 9000/1000 splits, a violation when the risk on the split's
  1000 *held-out* points at the chosen λ exceeds α (the paper's check). It detects a rule that
  stops at the calibration risk's crossing of α, but it is noisy: a valid rule's rate here is not
  bounded by δ. (Scoring these splits against the *pool* risk, as an earlier version did, detects
  nothing: 90 % of the pool is the split's own calibration set; see docs/validation.md.)

and the MACs and latency the run recorded for its certified model.

    python experiments/certification_table.py RUN_DIR [RUN_DIR ...] [--out experiments/results]

Writes ``certification_table.csv``, ``certification_table.md`` and ``certification_table.png``
(violation rate of the naive and the certified choice per α, one panel per model and loss).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from confprune.record import read_splits, read_summary
from confprune.stats import (
    NOT_CERTIFIED,
    certified_index,
    clopper_pearson,
    draw_iid_calibration,
    draw_splits,
    iid_validation,
    make_fwer,
    pvalues_from_losses,
    reject_on_grid,
    validate_splits,
)
from confprune.stats.naive import heldout_exceeds, naive_choice, oracle_index
from confprune.sweep import LossTable

ALPHAS = (0.01, 0.03, 0.05, 0.1)
DELTA = 0.05
MODEL_LABELS = {"mnist": "MNIST CNN", "mnist_paper_mlp": "MNIST MLP", "fashion": "Fashion CNN", "polyp": "Polyp U-Net"}


@dataclass
class Run:
    """One finished run: its summary, loss table and the random calibration sets it used."""

    directory: Path
    summary: Any
    table: LossTable
    splits: Any
    iid: Any

    @property
    def label(self) -> str:
        return MODEL_LABELS.get(self.summary.experiment, self.summary.experiment)


def load_run(directory: Path) -> Run:
    """Read a run and redraw its splits and i.i.d. draws (seeded as the pipeline draws them:
    calibration.split_seed defaults to the run's seed)."""
    summary = read_summary(directory)
    table = LossTable.load(directory / "losses.npz")
    if not table.complete:
        raise ValueError(f"{directory}: the loss table stops early; rerun without sweep.early_stop")
    n_pool = table.losses.shape[1]
    splits = draw_splits(n_pool, summary.n_cal, summary.n_test, summary.n_splits, summary.seed)
    iid = draw_iid_calibration(n_pool, summary.n_cal, summary.n_splits, summary.seed)
    return Run(directory, summary, table, splits, iid)


def check_against_run(run: Run) -> None:
    """The recomputation must reproduce the run's own splits.csv at the run's α (same splits,
    bound and procedure); otherwise the table would describe other splits than the run's."""
    s = run.summary
    v = validate_splits(run.table.losses, run.splits, alpha=s.alpha, delta=s.delta, bound=s.bound,
                        fwer=make_fwer(s.fwer))
    recorded = read_splits(run.directory)
    mine = np.where(v.certified, run.table.sparsity[np.maximum(v.lambda_index, 0)], np.nan)
    if not (np.array_equal(recorded["certified"], v.certified)
            and np.allclose(recorded["sparsity_hat"], mine, equal_nan=True, rtol=0, atol=1e-12)):
        raise RuntimeError(f"{run.directory}: recomputed splits differ from the run's splits.csv")


def spread(values: np.ndarray) -> tuple[float, float, float]:
    """(median, 5 %, 95 %) of the finite values; NaNs when there are none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan, math.nan
    return float(np.median(finite)), float(np.quantile(finite, 0.05)), float(np.quantile(finite, 0.95))


def deploy_index(run: Run, alpha: float, delta: float) -> int:
    """The certified grid index of the run's deployment calibration set (the indices its
    certificate records) at ``alpha``: LTT on those rows, as the run certifies at its own α."""
    cert = json.loads((run.directory / "certificate.json").read_text())
    cal = run.table.losses[:, np.asarray(cert["calibration_indices"], dtype=np.int64)]
    p = pvalues_from_losses(run.summary.bound, cal, alpha, delta)
    idx = int(certified_index(reject_on_grid(make_fwer(run.summary.fwer), p, delta)))
    if math.isclose(alpha, run.summary.alpha) and idx != cert["lambda_index"] and cert["certified"]:
        raise RuntimeError(f"{run.directory}: recomputed deployment λ̂ differs from the certificate's")
    return idx


def deploy_cost(run: Run, alpha: float, delta: float) -> dict[str, Any]:
    """MACs of the dense model and of the certified (deployed) model at ``alpha`` — nonzero MACs at
    its λ̂ from the run's cost curve — and the batch-1 latencies the run measured (the certified
    model's only at the run's own α, where it was exported and timed)."""
    cost = run.summary.cost or {}
    dense, deploy, curve = cost.get("dense") or {}, cost.get("deploy") or {}, cost.get("curve") or {}
    idx = deploy_index(run, alpha, delta)
    out: dict[str, Any] = {
        "deploy_sparsity": float(run.table.sparsity[idx]) if idx != NOT_CERTIFIED else math.nan,
        "dense_macs": dense.get("macs", math.nan),
        "cert_nonzero_macs": curve["nonzero_macs"][idx] if curve and idx != NOT_CERTIFIED else math.nan,
        "dense_latency_ms": _latency_ms(dense),
        "cert_latency_ms": math.nan,
    }
    if math.isclose(alpha, run.summary.alpha) and deploy:
        out["cert_latency_ms"] = _latency_ms(deploy)
    return out


def _latency_ms(entry: dict[str, Any]) -> float:
    """Median batch-1 latency in ms from a cost entry's ``latency`` record, NaN when absent."""
    one = (entry.get("latency") or {}).get("batch_1")
    return 1000.0 * float(one["median_s"]) if one else math.nan


def rows_for(run: Run, alphas: tuple[float, ...], delta: float) -> list[dict[str, Any]]:
    s, losses, sparsity = run.summary, run.table.losses, run.table.sparsity
    fwer = make_fwer(s.fwer)
    rows = []
    for alpha in alphas:
        oracle = oracle_index(losses, alpha)
        cert = validate_splits(losses, run.splits, alpha=alpha, delta=delta, bound=s.bound, fwer=fwer)
        cert_iid = iid_validation(losses, n_cal=s.n_cal, n_reps=s.n_splits, alpha=alpha, delta=delta,
                                  bound=s.bound, fwer=fwer, draws=run.iid)
        naive = naive_choice(losses, run.splits, alpha=alpha)
        naive_iid = naive_choice(losses, run.iid, alpha=alpha)
        cert_sp = np.where(cert.certified, sparsity[np.maximum(cert.lambda_index, 0)], np.nan)
        naive_sp = np.where(naive.chosen, sparsity[np.maximum(naive.lambda_index, 0)], np.nan)
        med, q05, q95 = spread(cert_sp)
        n_med, n_q05, n_q95 = spread(naive_sp)
        k_naive_iid = int(naive_iid.violated.sum())
        lo, hi = clopper_pearson(k_naive_iid, len(naive_iid.violated))
        rows.append({
            "model": run.label, "experiment": s.experiment, "loss": s.loss, "alpha": alpha, "delta": delta,
            "bound": s.bound, "n_cal": s.n_cal, "n_test": s.n_test, "n_splits": s.n_splits,
            "dense_risk": run.table.dense_risk,
            "oracle_sparsity": float(sparsity[oracle]) if oracle != NOT_CERTIFIED else math.nan,
            "cert_sparsity_median": med, "cert_sparsity_q05": q05, "cert_sparsity_q95": q95,
            "cert_fraction": float(cert.certified.mean()),
            "cert_violation_heldout": float(cert.violated.mean()),
            "cert_violation_iid": float(cert_iid.violated.mean()),
            "cert_iid_coverage": cert_iid.coverage,
            "cert_test_coverage": cert.coverage,
            "naive_sparsity_median": n_med, "naive_sparsity_q05": n_q05, "naive_sparsity_q95": n_q95,
            "naive_fraction": float(naive.chosen.mean()),
            "naive_violation_heldout": float(heldout_exceeds(losses, run.splits, naive.lambda_index, alpha).mean()),
            "naive_violation_iid": naive_iid.violation_rate,
            "naive_violation_iid_lo": lo, "naive_violation_iid_hi": hi,
            **deploy_cost(run, alpha, delta),
            "certified_from": f"validate_splits on the run's splits (== splits.csv at alpha={s.alpha:g})",
            "run_dir": str(run.directory),
        })
    return rows


def fmt(x: float, digits: int = 2) -> str:
    return "—" if not np.isfinite(x) else f"{x:.{digits}f}"


def spread_cell(r: dict[str, Any], which: str) -> str:
    """"median [5–95%]" of a sparsity column, "—" when no split chose anything."""
    med = r[f"{which}_sparsity_median"]
    if not np.isfinite(med):
        return "—"
    return f"{med:.2f} [{r[f'{which}_sparsity_q05']:.2f}–{r[f'{which}_sparsity_q95']:.2f}]"


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| model | loss | α | dense risk | oracle | certified [5–95%] (cert. splits) | naive [5–95%] | "
            "**naive violation** i.i.d. / held-out | certified violation i.i.d. / held-out | "
            "nonzero MACs deployed / dense; batch-1 latency |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        cost = "—"
        if np.isfinite(r["cert_nonzero_macs"]):
            cost = f"{r['cert_nonzero_macs'] / 1e6:.2f}M / {r['dense_macs'] / 1e6:.2f}M"
            if np.isfinite(r["cert_latency_ms"]):
                cost += f"; {r['cert_latency_ms']:.3f} / {r['dense_latency_ms']:.3f} ms"
        lines.append(
            f"| {r['model']} | {r['loss']} | {r['alpha']:g} | {r['dense_risk']:.4f} | {fmt(r['oracle_sparsity'])} | "
            f"{spread_cell(r, 'cert')} ({r['cert_fraction']:.2f}) | {spread_cell(r, 'naive')} | "
            f"**{r['naive_violation_iid']:.3f} / {r['naive_violation_heldout']:.3f}** | "
            f"{r['cert_violation_iid']:.3f} / {r['cert_violation_heldout']:.3f} | {cost} |"
        )
    return "\n".join(lines) + "\n"


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["model"], r["loss"]) for r in rows))
    ncol = min(4, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    top = max(0.6, 0.05 + max(max(r["naive_violation_iid_hi"], r["naive_violation_heldout"]) for r in rows))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.9 * nrow), sharey=True, squeeze=False)
    for ax, (model, loss) in zip(axes.flat, panels, strict=False):
        sel = [r for r in rows if (r["model"], r["loss"]) == (model, loss)]
        x = np.arange(len(sel))
        series = [
            ("naive_violation_iid", "naive, i.i.d. (exact)", "tab:red", "-", "o"),
            ("naive_violation_heldout", "naive, held-out test", "tab:red", ":", "s"),
            ("cert_violation_iid", "certified (LTT), i.i.d. (exact)", "tab:blue", "-", "o"),
            ("cert_violation_heldout", "certified (LTT), held-out test", "tab:blue", ":", "s"),
        ]
        for key, label, color, style, marker in series:
            ax.plot(x, [r[key] for r in sel], style, color=color, marker=marker, label=label)
        lo = [r["naive_violation_iid"] - r["naive_violation_iid_lo"] for r in sel]
        hi = [r["naive_violation_iid_hi"] - r["naive_violation_iid"] for r in sel]
        ax.errorbar(x, [r["naive_violation_iid"] for r in sel], yerr=[lo, hi], fmt="none", ecolor="tab:red", capsize=2)
        ax.axhline(sel[0]["delta"], color="grey", ls="--", lw=1, label="δ")
        for i, r in enumerate(sel):  # nothing can be chosen when the dense model's risk exceeds α
            if not np.isfinite(r["oracle_sparsity"]):
                ax.annotate("dense\nrisk > α", (i, 0.08), ha="center", fontsize=7, color="grey")
        ax.set_xticks(x, [f"{r['alpha']:g}" for r in sel])
        ax.set_title(f"{model}, {loss}", fontsize=9)
        ax.set_xlabel("α")
        ax.set_ylim(-0.02, top)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("P(risk at chosen λ > α)")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(f"Violation rate of the chosen λ: naive plug-in vs certified (δ = {rows[0]['delta']:g})\n"
                 "solid: i.i.d. draws, scored against the true (pool) risk — the rate the guarantee bounds by δ; "
                 "dotted: held-out test points of random splits — noisy, not bounded by δ (docs/validation.md)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.94))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories (summary.json, losses.npz)")
    parser.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    parser.add_argument("--delta", type=float, default=DELTA)
    parser.add_argument("--out", type=Path, default=Path("experiments/results"))
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for directory in args.runs:
        run = load_run(directory)
        check_against_run(run)
        rows += rows_for(run, tuple(args.alphas), args.delta)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "certification_table.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "certification_table.md").write_text(markdown(rows))
    figure(rows, args.out / "certification_table.png")
    print(markdown(rows))


if __name__ == "__main__":
    main()
