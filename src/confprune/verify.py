"""Audit a certificate by re-deriving it: ``python -m confprune.verify certificate.json pruned_model.pt``.

Nothing in the certificate is trusted. From the dense model and the data, verify rebuilds the
pruning family (criterion, scope, options, the seeded training batch of data-informed criteria),
the pruned model at λ̂ (compared tensor for tensor with the export), the calibration indices
(redrawn from the recorded pool size and seed), the calibration losses at every grid point the
FWER procedure needs, every p-value with the recorded bound, and the procedure's decision at its
own levels — and requires the same λ̂. Every field of the claim (α, δ, n, λ̂, sparsity, risk, the
sentence) must agree with what was recomputed. A failure names the field, the recorded value and
the recomputed one.

A calibration set the issuer chose (``confprune.certify`` on the issuer's own data) cannot be
audited for selection; such a certificate verifies as "VERIFIED WITH AN ISSUER-CHOSEN
CALIBRATION SET", never as a plain pass. The CLI never writes or downloads into a directory
named by the certificate: data come from ``--data-dir`` (default: ``$CONFPRUNE_DATA_DIR`` or
``./data``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .export import claim_text, load_certificate, pruned_state_dict
from .forward import as_batches
from .integrity import StreamingFingerprint, fingerprint, state_dict_checksum
from .losses import Loss, make_loss

PLAIN, ISSUER, FAILED = "VERIFIED", "VERIFIED WITH AN ISSUER-CHOSEN CALIBRATION SET", "NOT VERIFIED"


@dataclass(frozen=True)
class Check:
    """One re-derived field: its name, whether it agrees, and recorded vs recomputed."""

    name: str
    passed: bool
    detail: str


@dataclass
class VerificationReport:
    checks: list[Check] = field(default_factory=list)
    issuer_calibration: bool = False  # the calibration set was chosen by the issuer (not auditable)
    recomputed_cal_risk: float | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every check passed (with an issuer-chosen calibration set, see :attr:`status`)."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def status(self) -> str:
        if not self.ok:
            return FAILED
        return ISSUER if self.issuer_calibration else PLAIN

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def add(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append(Check(name, bool(passed), detail))
        return bool(passed)

    def expect(self, name: str, recorded: Any, recomputed: Any, same: bool | None = None) -> bool:
        """A field whose recorded value must equal the recomputed one."""
        if same is None:
            same = recorded == recomputed
        detail = f"{_show(recomputed)}" if same else f"recorded {_show(recorded)}, recomputed {_show(recomputed)}"
        return self.add(name, same, detail)

    def __str__(self) -> str:
        lines = [f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.detail}" for c in self.checks]
        tail = f"certificate {self.status}"
        if self.status == ISSUER:
            tail += " (every number re-derived; how the issuer chose its calibration data cannot be audited)"
        lines.append(f"{tail} in {self.seconds:.1f} s")
        return "\n".join(lines)


def _show(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, (list, tuple)) and len(v) > 6:
        return f"[{', '.join(map(str, v[:3]))}, …, {', '.join(map(str, v[-2:]))}] ({len(v)} values)"
    text = str(v)
    return text if len(text) <= 80 else text[:77] + "…"


def _collect(data: Any, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Materialise data (tensors or a fixed-order DataLoader) and fingerprint it as the sweep does."""
    xs, ys = [], []
    fp = StreamingFingerprint()
    for x, y in as_batches(data, batch_size)():
        fp.update(x, y)
        xs.append(x)
        if y is not None:
            ys.append(y)
    return torch.cat(xs), (torch.cat(ys) if ys else None), fp.hexdigest()


def _load_state(obj: str | Path | Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    from .export import load_export

    if obj is None:
        return None
    return dict(obj) if isinstance(obj, Mapping) else load_export(obj)


def _check_claim(cert: Mapping[str, Any], report: VerificationReport) -> bool:
    """Fields that must agree with each other before anything is recomputed."""
    from .stats import BOUNDS, DROP_METHODS, FWERS

    if cert.get("risks"):
        bounds = [r["bound"] for r in cert["risks"]]
        ok = report.expect("bound", cert["bound"], "+".join(bounds),
                           all(b in BOUNDS or (r["loss"] == "accuracy_drop" and b in DROP_METHODS)
                               for b, r in zip(bounds, cert["risks"], strict=True)) and cert["bound"] == "+".join(bounds))
    else:
        ok = report.expect("bound", cert["bound"], cert["bound"], cert["bound"] in BOUNDS)
    ok &= report.expect("fwer", cert["fwer"], cert["fwer"], cert["fwer"] in FWERS)
    ok &= report.add("alpha, delta", 0 < cert["alpha"] < 1 and 0 < cert["delta"] < 1,
                     f"alpha={cert['alpha']}, delta={cert['delta']} (each must lie in (0, 1))")
    grid = np.asarray(cert["grid"], dtype=np.float64)
    ok &= report.add("grid", grid.size >= 1 and bool(np.all(np.diff(grid) > 0)) and grid[0] >= 0 and grid[-1] < 1
                     and 1 <= cert["grid_evaluated"] == len(cert["p_values"]) <= grid.size,
                     f"{grid.size} points fixed in advance, {cert['grid_evaluated']} evaluated")
    idx = cert["calibration_indices"]
    ok &= report.expect("n_cal", cert["n_cal"], len(idx))
    ok &= report.add("calibration indices distinct", len(set(idx)) == len(idx), f"{len(set(idx))} distinct of {len(idx)}")
    j, lam = cert["lambda_index"], cert["lambda_hat"]
    certified = j is not None and j >= 0
    ok &= report.expect("certified", cert["certified"], certified)
    if certified and 0 <= j < grid.size:
        ok &= report.expect("lambda_hat", lam, float(grid[j]))
    elif certified:
        ok &= report.add("lambda_index", False, f"recorded {j}, outside the grid of {grid.size} points")
    else:
        ok &= report.expect("lambda_hat", lam, None)
    ok &= report.expect("claim", cert["claim"], claim_text(certified, cert["alpha"], cert["delta"], cert["n_cal"],
                                                           cert["loss"]["name"], cert["bound"], cert["fwer"],
                                                           cert.get("risks")))
    return ok


def _calibration_indices(cert: Mapping[str, Any], n_points: int, report: VerificationReport) -> np.ndarray | None:
    from .calibrate import deployment_indices

    idx = np.asarray(cert["calibration_indices"], dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n_points):
        report.add("calibration indices", False, f"indices up to {idx.max()} but the data has {n_points} points")
        return None
    draw = cert.get("calibration") or {}
    if draw.get("source") == "seeded":
        report.expect("calibration.pool_size", draw.get("pool_size"), n_points)
        redrawn = deployment_indices(int(draw["pool_size"]), int(draw["n_cal"]), int(draw["seed"]))
        same = redrawn.shape == idx.shape and bool(np.array_equal(redrawn, idx))
        report.add("calibration indices", same,
                   f"redrawn from pool size {draw['pool_size']}, n_cal {draw['n_cal']}, seed {draw['seed']}: "
                   + ("identical" if same else "DIFFERENT from the recorded indices"))
    elif draw.get("source") == "issuer":
        report.issuer_calibration = True
        report.add("calibration indices", True, f"issuer-chosen calibration set of {idx.size} points (selection not auditable)")
        _check_order(cert, draw, idx, report)
    else:
        report.add("calibration", False, f"unknown calibration source {draw.get('source')!r}")
        return None
    return idx


def _check_order(cert: Mapping[str, Any], draw: Mapping[str, Any], idx: np.ndarray, report: VerificationReport) -> None:
    """The betting order of an issuer-chosen set must be the seeded permutation of the set
    (:func:`confprune.calibrate.seeded_order`), re-derived here; an order the issuer chose is
    accepted only where no bound bets (sum-based bounds ignore the order)."""
    from .calibrate import seeded_order

    if draw.get("order") == "seeded_order":
        same = bool(np.array_equal(seeded_order(idx, int(draw["order_seed"])), idx))
        report.add("calibration order", same, f"the seeded permutation of the set (seed {draw['order_seed']}): "
                   + ("identical" if same else "DIFFERENT from the recorded order"))
        return
    bounds = [r["bound"] for r in cert["risks"]] if cert.get("risks") else [cert["bound"]]
    sequential = "wsr" in bounds
    report.add("calibration order", not sequential,
               "the wsr bound bets in an order the issuer chose (not a seeded permutation): not auditable"
               if sequential else "issuer's order (the bound does not depend on it)")


def _rebuild_family(cert: Mapping[str, Any], model: nn.Module, report: VerificationReport, *, score_inputs: Any,
                    train_inputs: Any, trajectory: Mapping[str, torch.Tensor] | None, example: torch.Tensor) -> Any:
    from .pruning import build_family

    rec = cert["pruning"]
    try:
        family = build_family(model, **rec["config"], trajectory=trajectory, score_inputs=score_inputs,
                              train_inputs=train_inputs, example_inputs=torch.zeros_like(example[:2]))
    except (ValueError, TypeError, KeyError) as err:
        report.add("pruning family", False, f"cannot rebuild it from {rec.get('config')}: {err}")
        return None
    ok = report.expect("pruning.pool_parameters", rec["pool_parameters"], list(family.parameter_names))
    ok &= report.expect("pruning.pool_size", rec["pool_size"], family.pool_size)
    if rec.get("score_inputs"):
        got = (family.score_info or {}).get("fingerprint")
        ok &= report.expect("pruning.score_inputs", rec["score_inputs"].get("fingerprint"), got)
    if rec.get("trajectory_checksum") or family.trajectory_checksum:
        ok &= report.expect("pruning.trajectory_checksum", rec.get("trajectory_checksum"), family.trajectory_checksum)
    return family if ok else None


def _needed_rows(cert: Mapping[str, Any]) -> int:
    """Grid rows the procedure's decision depends on: fixed sequence stops at the first failure
    after λ̂; every other procedure looks at every evaluated row."""
    evaluated = int(cert["grid_evaluated"])
    if cert["fwer"] == "fixed_sequence":
        return min(evaluated, max(cert["lambda_index"], -1) + 2)
    return evaluated


def verify_certificate(
    certificate: str | Path | Mapping[str, Any],
    pruned_model: str | Path | Mapping[str, torch.Tensor] | None,
    model: nn.Module,
    data: Any,
    *,
    loss: Loss | Callable[..., torch.Tensor] | None = None,
    score_inputs: torch.Tensor | None = None,
    train_inputs: torch.Tensor | Callable[[], torch.Tensor] | None = None,
    trajectory: Mapping[str, torch.Tensor] | None = None,
    batch_size: int | None = None,
) -> VerificationReport:
    """Re-derive a certificate from the dense ``model`` and ``data``; see the module docstring.

    ``model``: the dense model the certificate was issued for (its weights are checked against
    the recorded checksum). ``data``: every point the certificate's indices refer to — the pool
    for Hydra runs, the calibration data for :func:`confprune.certify` — as tensors or a
    fixed-order DataLoader. ``score_inputs`` / ``train_inputs``: the training batch of a
    data-informed criterion, or the training set to redraw it from; ``trajectory``: M&U's
    statistics. ``loss``: only for custom (callable) losses. ``pruned_model``: the export (None
    when nothing was certified). The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    try:
        return _verify(certificate, pruned_model, model, data, loss=loss, score_inputs=score_inputs,
                       train_inputs=train_inputs, trajectory=trajectory, batch_size=batch_size)
    finally:
        model.train(was_training)


def _verify(certificate: Any, pruned_model: Any, model: nn.Module, data: Any, *, loss: Any, score_inputs: Any,
            train_inputs: Any, trajectory: Any, batch_size: int | None) -> VerificationReport:
    from .api import resolve_loss
    from .stats import make_fwer, pvalues_from_losses, reject_on_grid
    from .stats.fwer import certified_index
    from .sweep import compute_loss_table

    t0 = time.perf_counter()
    report = VerificationReport()
    try:
        cert = load_certificate(certificate) if not isinstance(certificate, Mapping) else dict(certificate)
        state = _load_state(pruned_model)
    except (OSError, ValueError, RuntimeError) as err:
        report.add("certificate", False, f"unreadable: {err}")
        return report
    if not _check_claim(cert, report):
        report.seconds = time.perf_counter() - t0
        return report
    report.expect("model.dense_checksum", cert["model"]["dense_checksum"], state_dict_checksum(model.state_dict()))
    batch = int(batch_size or cert.get("sweep", {}).get("batch_size") or 500)
    x, y, data_fp = _collect(data, batch)
    report.expect("data.data_fingerprint", cert["data"].get("data_fingerprint"), data_fp)
    idx = _calibration_indices(cert, x.shape[0], report)
    if idx is None:
        return _done(report, t0)
    # A seeded betting order permutes the issuer's set: its fingerprint is the set's, in index order.
    in_order = np.sort(idx) if (cert.get("calibration") or {}).get("order") == "seeded_order" else idx
    report.expect("data.calibration_fingerprint", cert["data"].get("calibration_fingerprint"), fingerprint(x, y, in_order))
    family = _rebuild_family(cert, model, report, score_inputs=score_inputs, train_inputs=train_inputs,
                             trajectory=trajectory, example=x)
    if family is None:
        return _done(report, t0)
    rec_loss = cert["loss"]
    loss_obj = resolve_loss(loss) if loss is not None else make_loss(rec_loss["name"], **rec_loss.get("options", {}))

    # The losses, p-values and decision, at every grid point the procedure needs.
    grid = np.asarray(cert["grid"], dtype=np.float64)
    rows = _needed_rows(cert)
    alpha, delta, j = cert["alpha"], cert["delta"], cert["lambda_index"]
    if cert.get("risks"):
        p, risk = _recompute_risks(cert, model, family, grid[:rows], x, y, idx, batch, report)
    else:
        table = compute_loss_table(model, family, grid[:rows], (x, y), loss_obj, batch_size=batch, progress=False)
        cal = table.losses[:, idx]
        p = np.asarray(pvalues_from_losses(cert["bound"], cal, alpha, delta), dtype=np.float64)
        risk = cal.astype(np.float64).sum(axis=1) / cal.shape[1]
    recorded_p = np.asarray(cert["p_values"], dtype=np.float64)
    close = np.isclose(p, recorded_p[:rows], rtol=1e-12, atol=0)
    report.add("p_values", bool(close.all()),
               f"{rows} of {grid.size} grid points recomputed with the {cert['bound']} bound"
               + ("" if close.all() else f"; first difference at lambda={grid[int(np.argmin(close))]:g}: recorded "
                  f"{_show(recorded_p[int(np.argmin(close))])}, recomputed {_show(p[int(np.argmin(close))])}"))
    report.expect("cal_risk_per_lambda", cert["cal_risk_per_lambda"][:rows], [float(r) for r in risk])
    procedure = make_fwer(cert["fwer"], **cert.get("fwer_options", {}))
    p_all = np.concatenate([p, recorded_p[rows:]])  # rows the decision does not depend on
    decided = int(certified_index(reject_on_grid(procedure, p_all, delta, n_grid=grid.size)))
    report.expect("lambda_index", j, decided)
    if decided >= 0:
        report.recomputed_cal_risk = float(risk[decided])
        report.expect("cal_risk", cert["cal_risk"], report.recomputed_cal_risk)
        report.expect("sparsity_pool", cert["sparsity_pool"], family.sparsity(float(grid[decided])))
        total = sum(t.numel() for t in model.parameters())
        report.expect("sparsity_model", cert["sparsity_model"],
                      int(round(family.sparsity(float(grid[decided])) * family.pool_size)) / total)
    _check_export(cert, state, model, family, grid, decided, report)
    if cert.get("cost"):
        _check_cost(cert["cost"], model, family, grid, decided, x, report)
    return _done(report, t0)


def _check_cost(cost: Mapping[str, Any], model: nn.Module, family: Any, grid: np.ndarray, decided: int, x: torch.Tensor,
                report: VerificationReport) -> None:
    """Parameters, MACs and export bytes are re-derived; latency was measured on the issuer's
    machine and is reported, not checked."""
    from .cost import model_cost

    keys = ("parameters", "macs", "nonzero_macs", "bytes")
    for label, lam in (("dense", None), ("deploy", float(grid[decided]) if decided >= 0 else None)):
        recorded = cost.get(label)
        if recorded is None:
            continue
        got = model_cost(model, family, lam, x[:1])
        report.expect(f"cost.{label}", {k: recorded.get(k) for k in keys}, {k: got[k] for k in keys})
    latency = (cost.get("deploy") or {}).get("latency")
    if latency:
        where = (cost.get("machine") or {}).get("cpu", "the issuer's machine")
        report.add("cost.latency", True, f"measured by the issuer on {where} (not re-derivable here): "
                   + ", ".join(f"{k} {1e3 * v['median_s']:.2f} ms" for k, v in latency.items() if k.startswith("batch_")))


def _recompute_risks(cert: Mapping[str, Any], model: nn.Module, family: Any, grid: np.ndarray, x: torch.Tensor,
                     y: torch.Tensor | None, idx: np.ndarray, batch: int, report: VerificationReport) -> tuple[np.ndarray, np.ndarray]:
    """Several risks: every risk's p-values (each compared with its record) and the combined ones."""
    from .stats.risks import RiskSpec, calibrate_risks
    from .sweep import compute_loss_tables

    fields = ("loss", "alpha", "bound", "per_class", "gamma")
    specs = [RiskSpec(**{k: r[k] for k in fields}) for r in cert["risks"]]
    names = list(dict.fromkeys(s.table for s in specs))
    tables = compute_loss_tables(model, family, grid, (x, y), [make_loss(n) for n in names], batch_size=batch,
                                 progress=False)
    arrays = {n: t.losses for n, t in zip(names, tables, strict=True)}
    dense = {n: t.dense_losses for n, t in zip(names, tables, strict=True)}  # the drop's reference: the dense model
    labels = None if y is None else y.cpu().numpy()
    cal, each = calibrate_risks(arrays, specs, idx, delta=cert["delta"], labels=labels, dense=dense)
    for r in cert["risks"]:
        got = each[r["name"]]
        report.add(f"risks[{r['name']}].p_values", bool(np.allclose(got, r["p_values"][: got.size], rtol=1e-12, atol=0)),
                   f"{got.size} grid points recomputed with {r['bound']}")
    return cal.p_values, cal.risk


def _check_export(cert: Mapping[str, Any], state: dict[str, torch.Tensor] | None, model: nn.Module, family: Any,
                  grid: np.ndarray, decided: int, report: VerificationReport) -> None:
    """The exported model must be, tensor for tensor, the family's pruned model at λ̂."""
    if decided < 0:
        report.add("pruned model", state is None, "nothing certified, and no pruned model given" if state is None
                   else "nothing is certified, yet a pruned model was given")
        return
    if state is None:
        report.add("pruned model", False, "the certificate certifies a model, but none was given")
        return
    report.expect("model.pruned_checksum", cert["model"]["pruned_checksum"], state_dict_checksum(state))
    expected = pruned_state_dict(model, family, float(grid[decided]))
    if set(expected) != set(state):
        report.add("pruned model", False, f"tensor names differ: {sorted(set(expected) ^ set(state))[:5]}")
        return
    for name, want in expected.items():
        got = state[name]
        if got.shape != want.shape or got.dtype != want.dtype or not torch.equal(got.cpu(), want.cpu()):
            diff = (got.double() - want.double()).abs().max().item() if got.shape == want.shape else math.inf
            report.add("pruned model", False, f"tensor {name!r} differs from the rebuilt pruned model (max |diff| {diff:g})")
            return
    report.add("pruned model", True, f"all {len(expected)} tensors equal the family's pruned model at lambda={grid[decided]:g}")


def _done(report: VerificationReport, t0: float) -> VerificationReport:
    report.seconds = time.perf_counter() - t0
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m confprune.verify",
        description="Re-derive a confprune certificate from the dense model and the data (see the README: "
                    "'What a certificate proves'). Exit 0: verified; 1: not verified; 2: cannot be checked.",
    )
    parser.add_argument("certificate")
    parser.add_argument("pruned_model", nargs="?", help="the exported pruned_model.pt (omit when nothing was certified)")
    parser.add_argument("--data-dir", default=os.environ.get("CONFPRUNE_DATA_DIR", "data"),
                        help="where datasets are read from (and fetched into, if missing): never the certificate's")
    parser.add_argument("--dense", help="dense checkpoint (default: the one the certificate names; read only)")
    args = parser.parse_args(argv)
    from .data import load_dataset
    from .models import build_model

    try:
        cert = load_certificate(args.certificate)
    except (OSError, ValueError) as err:
        print(f"confprune.verify: {err}", file=sys.stderr)
        return 2
    if "config" not in cert.get("model", {}):
        print("confprune.verify: this certificate does not record a model config (made by confprune.certify?): "
              "use confprune.verify_certificate(...) from Python with your dense model and data", file=sys.stderr)
        return 2
    ckpt = Path(args.dense or cert["model"].get("checkpoint", ""))
    if not ckpt.is_file():
        print(f"confprune.verify: dense checkpoint {ckpt} not found: pass --dense <checkpoint.pt>", file=sys.stderr)
        return 2
    model = build_model(cert["model"]["config"])
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    model.load_state_dict(blob["state_dict"] if "state_dict" in blob else blob)
    dataset = {**cert["data"]["dataset"], "data_dir": args.data_dir}
    data = load_dataset(dataset)
    report = verify_certificate(
        cert, args.pruned_model, model.eval(), (data.pool_inputs, data.pool_targets),
        train_inputs=lambda: data.train_inputs, trajectory=dict(blob.get("trajectory", {})) or None,
    )
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
