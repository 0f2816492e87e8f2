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
#: CLI exit codes: a plain pass, not verified, cannot be checked, and verified with an issuer-chosen
#: calibration set (every number re-derived, the choice of the set not auditable: never a plain pass).
EXIT_CODES = {PLAIN: 0, FAILED: 1, "CANNOT BE CHECKED": 2, ISSUER: 3}
#: Level of the held-out test of the claim (ours): verify fails when the points the issuer did not
#: calibrate on reject "risk at λ̂ ≤ α" at this level. Small, because those points are not
#: independent of the calibration set given a finite pool (docs/validation.md).
HOLDOUT_LEVEL = 1e-3


@dataclass(frozen=True)
class Check:
    """One field: its name, whether it agrees, and recorded vs recomputed. ``recorded`` marks a
    field that is reported as the issuer recorded it and not re-derived (latency, machine)."""

    name: str
    passed: bool
    detail: str
    recorded: bool = False


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

    def note(self, name: str, detail: str) -> None:
        """A recorded field that verify reports but cannot re-derive (printed as RECORDED, not PASS)."""
        self.checks.append(Check(name, True, detail, recorded=True))

    def expect(self, name: str, recorded: Any, recomputed: Any, same: bool | None = None) -> bool:
        """A field whose recorded value must equal the recomputed one."""
        if same is None:
            same = recorded == recomputed
        detail = f"{_show(recomputed)}" if same else f"recorded {_show(recorded)}, recomputed {_show(recomputed)}"
        return self.add(name, same, detail)

    def __str__(self) -> str:
        lines = [f"{'RECORDED' if c.recorded else 'PASS' if c.passed else 'FAIL'}  {c.name}: {c.detail}"
                 for c in self.checks]
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
    ok &= report.expect("fwer", cert["fwer"], cert["fwer"],
                        cert["fwer"] in FWERS or (cert["fwer"] == "pareto_testing" and bool(cert.get("pareto"))))
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


def _calibration_indices(cert: Mapping[str, Any], n_points: int, data_fp: str, report: VerificationReport,
                         data_from_registry: bool) -> np.ndarray | None:
    from .calibrate import deployment_indices
    from .commitment import COMMITTED, check_draw

    idx = np.asarray(cert["calibration_indices"], dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n_points):
        report.add("calibration indices", False, f"indices up to {idx.max()} but the data has {n_points} points")
        return None
    draw = cert.get("calibration") or {}
    if draw.get("source") == COMMITTED:
        report.expect("calibration.pool_size", draw.get("pool_size"), n_points)
        for name, ok, detail in check_draw(cert, data_fp, n_points):
            report.add(name, ok, detail)
        if not data_from_registry:  # a draw over points the issuer handed over: the points were still its choice
            report.issuer_calibration = True
            report.note("calibration source", "a committed draw from data given to verify, not loaded from the "
                        "dataset registry: which points the pool holds was the issuer's choice")
    elif draw.get("source") == "seeded":  # certificates issued before the commitment (issue 25)
        redrawn = deployment_indices(int(draw["pool_size"]), int(draw["n_cal"]), int(draw["seed"]))
        same = redrawn.shape == idx.shape and bool(np.array_equal(redrawn, idx))
        report.add("calibration indices", same,
                   f"redrawn from pool size {draw['pool_size']}, n_cal {draw['n_cal']}, seed {draw['seed']}: "
                   + ("identical" if same else "DIFFERENT from the recorded indices"))
        report.issuer_calibration = True
        report.note("calibration source", f"seed {draw['seed']} was the issuer's choice (a certificate from before "
                    "draws were derived from a commitment): it could have been searched after seeing the losses")
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
    from .stats import BOUNDS, get_bound

    bounds = [r["bound"] for r in cert["risks"]] if cert.get("risks") else [cert["bound"]]
    sequential = any(get_bound(b).sequential for b in bounds if b in BOUNDS)  # the drop's "wsr" is the same bet
    report.add("calibration order", not sequential,
               "the wsr bound bets in an order the issuer chose (not a seeded permutation): not auditable"
               if sequential else "issuer's order (the bound does not depend on it)")


def _rebuild_family(cert: Mapping[str, Any], model: nn.Module, report: VerificationReport, *, score_inputs: Any,
                    train_inputs: Any, trajectory: Mapping[str, torch.Tensor] | None, example: torch.Tensor) -> Any:
    from .pruning import FamilySpec

    rec = cert["pruning"]
    try:  # the spec rebuilds every family, the int8 wrapper included
        family = FamilySpec.from_config(rec["config"], group="pruning.config").build(
            model, trajectory=trajectory, score_inputs=score_inputs, train_inputs=train_inputs,
            example_inputs=torch.zeros_like(example[:2]))
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
    holdout: Any = None,
    data_from_registry: bool = False,
) -> VerificationReport:
    """Re-derive a certificate from the dense ``model`` and ``data``; see the module docstring.

    ``model``: the dense model the certificate was issued for (its weights are checked against
    the recorded checksum). ``data``: every point the certificate's indices refer to — the pool
    for Hydra runs, the calibration data for :func:`confprune.certify` — as tensors or a
    fixed-order DataLoader. ``score_inputs`` / ``train_inputs``: the training batch of a
    data-informed criterion, or the training set to redraw it from; ``trajectory``: M&U's
    statistics. ``loss``: only for custom (callable) losses. ``pruned_model``: the export (None
    when nothing was certified). ``holdout``: data of the verifier's own (exchangeable with the
    calibration data, never seen by the issuer) on which the claim is tested as well. The points of
    ``data`` outside the calibration set are always tested (``HOLDOUT_LEVEL``).
    ``data_from_registry``: True only when ``data`` was loaded from the dataset registry as the
    certificate names it (the CLI does): a seeded draw is a plain pass only from data the
    verifier identified; from data an issuer hands over it counts as issuer-chosen. The model's
    train/eval mode is restored afterwards.
    """
    was_training = model.training
    try:
        return _verify(certificate, pruned_model, model, data, loss=loss, score_inputs=score_inputs,
                       train_inputs=train_inputs, trajectory=trajectory, batch_size=batch_size, holdout=holdout,
                       data_from_registry=data_from_registry)
    finally:
        model.train(was_training)


def _verify(certificate: Any, pruned_model: Any, model: nn.Module, data: Any, *, loss: Any, score_inputs: Any,
            train_inputs: Any, trajectory: Any, batch_size: int | None, holdout: Any,
            data_from_registry: bool) -> VerificationReport:
    from .api import resolve_loss

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
    idx = _calibration_indices(cert, x.shape[0], data_fp, report, data_from_registry)
    if idx is None:
        return _done(report, t0)
    # A seeded betting order permutes the issuer's set: its fingerprint is the set's, in index order.
    in_order = np.sort(idx) if (cert.get("calibration") or {}).get("order") == "seeded_order" else idx
    report.expect("data.calibration_fingerprint", cert["data"].get("calibration_fingerprint"), fingerprint(x, y, in_order))
    if cert.get("pareto"):  # several families: Pareto testing re-run on the recomputed tables
        _verify_pareto(cert, pruned_model, state, model, x, y, idx, batch, report, score_inputs=score_inputs,
                       train_inputs=train_inputs, trajectory=trajectory)
        _check_disjoint(x, train_inputs, report)
        return _done(report, t0)
    family = _rebuild_family(cert, model, report, score_inputs=score_inputs, train_inputs=train_inputs,
                             trajectory=trajectory, example=x)
    if family is None:
        return _done(report, t0)
    rec_loss = cert["loss"]
    loss_obj = resolve_loss(loss) if loss is not None else make_loss(rec_loss["name"], **rec_loss.get("options", {}))

    # The losses, p-values and decision, at every grid point the procedure needs.
    grid = np.asarray(cert["grid"], dtype=np.float64)
    rows = _needed_rows(cert)
    found = _recompute_risks(cert, model, family, grid[:rows], x, y, idx, batch, loss_obj, report)
    if found is None:
        return _done(report, t0)
    decided = _check_decision(cert, found, grid, rows, report)
    if decided >= 0:
        report.recomputed_cal_risk = float(found.risk[decided])
        report.expect("cal_risk", cert["cal_risk"], report.recomputed_cal_risk)
        report.expect("sparsity_pool", cert["sparsity_pool"], family.sparsity(float(grid[decided])))
        total = sum(t.numel() for t in model.parameters())
        report.expect("sparsity_model", cert["sparsity_model"],
                      int(round(family.sparsity(float(grid[decided])) * family.pool_size)) / total)
        _check_holdout(cert, found, decided, idx, report)
        if holdout is not None:
            _check_verifier_data(found, model, family, float(grid[decided]), holdout, batch, loss_obj, report)
    _check_export(cert, pruned_model, state, model, family, grid, decided, report)
    _check_recorded_fields(cert, model, family, loss_obj, found, report)
    _check_disjoint(x, train_inputs, report)
    if cert.get("cost"):
        _check_cost(cert["cost"], model, family, grid, decided, x, report)
    return _done(report, t0)


@dataclass
class _Recomputed:
    """What verify recomputed from the model and the data, on the grid rows the decision needs."""

    p: np.ndarray  # (rows,) the combined p-values
    risk: np.ndarray  # (rows,) the first risk's calibration estimate
    tables: dict[str, np.ndarray]  # (rows, N) loss tables by name, over every data point
    dense: dict[str, np.ndarray]  # (N,) the dense model's own losses by table name
    specs: list[Any]  # the risks (a single-risk certificate: one mean risk)


def _check_decision(cert: Mapping[str, Any], found: _Recomputed, grid: np.ndarray, rows: int,
                    report: VerificationReport) -> int:
    """Every recomputed p-value against its record, and the FWER procedure's decision."""
    from .stats import make_fwer, reject_on_grid
    from .stats.fwer import certified_index

    p = found.p
    recorded_p = np.asarray(cert["p_values"], dtype=np.float64)
    close = np.isclose(p, recorded_p[:rows], rtol=1e-12, atol=0)
    report.add("p_values", bool(close.all()),
               f"{rows} of {grid.size} grid points recomputed with the {cert['bound']} bound"
               + ("" if close.all() else f"; first difference at lambda={grid[int(np.argmin(close))]:g}: recorded "
                  f"{_show(recorded_p[int(np.argmin(close))])}, recomputed {_show(p[int(np.argmin(close))])}"))
    report.expect("cal_risk_per_lambda", cert["cal_risk_per_lambda"][:rows], [float(r) for r in found.risk])
    procedure = make_fwer(cert["fwer"], **cert.get("fwer_options", {}))
    p_all = np.concatenate([p, recorded_p[rows:]])  # rows the decision does not depend on
    decided = int(certified_index(reject_on_grid(procedure, p_all, cert["delta"], n_grid=grid.size)))
    report.expect("lambda_index", cert["lambda_index"], decided)
    return decided


def _claim_values(spec: Any, rows: Mapping[str, np.ndarray], dense: Mapping[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """The per-point values whose mean the claim bounds, at λ̂, and that bound: the loss and α, or
    for the accuracy drop its shifted form (d + 1)/2 and (1 + α)/2."""
    from .stats.risks import DROP, shifted_drop

    if spec.loss == DROP:
        return shifted_drop(rows[spec.table][None], dense[spec.table])[0], (1 + spec.alpha) / 2
    return np.asarray(rows[spec.table], dtype=np.float64), float(spec.alpha)


def _claim_test_pvalue(values: np.ndarray, alpha: float) -> float:
    """One-sided p-value of "mean ≤ alpha" from m points in [0, 1]: exact binomial for 0/1 values,
    else Hoeffding's KL bound exp(−m·h1(mean, alpha)) (1 when the mean is ≤ alpha)."""
    from .stats import is_binary
    from .stats.pvalues import binom_cdf, h1

    m, mean = values.size, float(values.mean())
    if is_binary(values[None]):
        k = int(round(float(values.sum())))
        return float(1.0 - binom_cdf(np.array(k - 1), m, alpha))
    return 1.0 if mean <= alpha else float(np.exp(-m * h1(min(mean, 1.0), alpha)))


def _test_claim(label: str, specs: list[Any], rows: Mapping[str, np.ndarray], dense: Mapping[str, np.ndarray],
                report: VerificationReport) -> None:
    """Test the claimed risks at λ̂ on points the issuer did not calibrate on (see HOLDOUT_LEVEL)."""
    for spec in specs:
        if spec.per_class:
            report.note(f"{label}[{spec.name}]", "per-class risks are not tested on held-out points")
            continue
        values, level = _claim_values(spec, rows, dense)
        p = _claim_test_pvalue(values, level)
        report.add(f"{label}[{spec.name}]", p >= HOLDOUT_LEVEL,
                   f"{'mean drop' if spec.loss == 'accuracy_drop' else 'risk'} at lambda_hat on {values.size} points "
                   f"the issuer did not calibrate on: {2 * values.mean() - 1 if spec.loss == 'accuracy_drop' else values.mean():.4g}; "
                   f"one-sided p = {p:.3g} for the claim (" + ("not rejected" if p >= HOLDOUT_LEVEL else "REJECTED")
                   + f" at level {HOLDOUT_LEVEL:g})")


def _check_holdout(cert: Mapping[str, Any], found: _Recomputed, decided: int, idx: np.ndarray,
                   report: VerificationReport) -> None:
    """The claim tested on the data points outside the calibration set (the pool's complement),
    and the recorded holdout risk recomputed. A seed searched for after seeing the losses can
    make a false claim pass calibration; it cannot make the other points agree with it."""
    n_points = next(iter(found.tables.values())).shape[1]
    rest = np.setdiff1d(np.arange(n_points), idx)
    if rest.size == 0:
        report.note("holdout test", "no held-out points (the calibration set is all the data): the claim is not "
                    "tested on other data")
        return
    _test_claim("holdout test", found.specs, {k: t[decided, rest] for k, t in found.tables.items()},
                {k: d[rest] for k, d in found.dense.items()}, report)
    if cert.get("holdout_risk") is not None:
        first = found.tables[found.specs[0].table]
        report.expect("holdout_risk", cert["holdout_risk"], float(first[decided, rest].mean(dtype=np.float64)),
                      same=bool(np.isclose(cert["holdout_risk"], first[decided, rest].mean(dtype=np.float64),
                                           rtol=1e-6, atol=1e-9)))  # recorded as a float32 mean


def _check_verifier_data(found: _Recomputed, model: nn.Module, family: Any, lam: float, data: Any, batch: int,
                         loss_obj: Loss, report: VerificationReport, label: str = "verifier data test") -> None:
    """The claim tested on data the verifier supplies (never seen by the issuer), or on held-out points."""
    from .sweep import compute_loss_tables

    names = list(found.tables)
    losses = [loss_obj if n == loss_obj.name else make_loss(n) for n in names]
    tables = compute_loss_tables(model, family, [lam], data, losses, batch_size=batch, progress=False)
    _test_claim(label, found.specs, {n: t.losses[0] for n, t in zip(names, tables, strict=True)},
                {n: t.dense_losses for n, t in zip(names, tables, strict=True)}, report)


def _check_disjoint(x: torch.Tensor, train_inputs: Any, report: VerificationReport) -> None:
    """The claim's premise: the model was not trained on the data it is calibrated on. With the
    training set at hand (the CLI loads the dataset's), no data point may be one of its inputs
    (exact byte equality); without it the premise is reported as unchecked."""
    import hashlib

    if train_inputs is None:
        report.note("training data", "not given: that the dense model never saw the calibration data is the issuer's word")
        return
    train = train_inputs() if callable(train_inputs) else train_inputs
    if train is None or train.shape[0] == 0:  # a pretrained model's data: no training set to compare with
        report.note("training data", "none at hand (a pretrained model's data): that the dense model never saw "
                    "the calibration data is the issuer's word")
        return

    def digests(t: torch.Tensor) -> list[bytes]:
        rows = t.detach().cpu().contiguous().numpy().reshape(t.shape[0], -1)
        return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]

    seen = set(digests(train))
    shared = sum(d in seen for d in digests(x))
    report.add("training data disjoint from the data", shared == 0,
               f"{shared} of {x.shape[0]} data points are also inputs of the {len(seen)}-point training set "
               "(that the checkpoint was trained on this training set is recorded, model.cache_key, not re-derived)")


def _check_recorded_fields(cert: Mapping[str, Any], model: nn.Module, family: Any, loss_obj: Loss,
                           found: _Recomputed, report: VerificationReport) -> None:
    """Fields besides the decision: each re-derived where it can be, else reported as recorded."""
    from .losses import LOSSES
    from .stats import is_binary

    rec = cert["pruning"]
    for key in ("criterion", "scope", "structure"):
        if key in rec:
            report.expect(f"pruning.{key}", rec[key], getattr(family, key))
    if "model_parameters" in rec:
        report.expect("pruning.model_parameters", rec["model_parameters"], sum(t.numel() for t in model.parameters()))
    first = found.specs[0]
    if cert.get("risks"):
        report.expect("alpha", cert["alpha"], first.alpha)  # the first risk's
        report.expect("loss.name (the first risk's table)", cert["loss"]["name"], first.table)
    binary = LOSSES[loss_obj.name].binary if loss_obj.name in LOSSES else bool(is_binary(found.tables[first.table]))
    if "binary" in cert["loss"] and (loss_obj.name in LOSSES or cert["loss"]["binary"]):
        report.expect("loss.binary", cert["loss"]["binary"], binary)
    info = cert.get("model") or {}
    kept = {k: info[k] for k in ("name", "seed", "cache_key", "checkpoint") if k in info}
    if kept:
        report.note("model", f"{_show(kept)} as recorded (the dense checksum above is what identifies the model)")


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
        report.note("cost.latency", f"measured by the issuer on {where} (not re-derivable here): "
                    + ", ".join(f"{k} {1e3 * v['median_s']:.2f} ms" for k, v in latency.items() if k.startswith("batch_")))
    if cost.get("machine"):
        report.note("cost.machine", _show(cost["machine"]))


def _risks_of(cert: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The certificate's risks; a certificate written before every risk was a list (one loss,
    alpha and bound at the top level) as the list of one."""
    if cert.get("risks"):
        return list(cert["risks"])
    return [{"loss": cert["loss"]["name"], "alpha": cert["alpha"], "bound": cert["bound"], "per_class": False,
             "gamma": None, "name": cert["loss"]["name"], "p_values": cert["p_values"]}]


def _recompute_risks(cert: Mapping[str, Any], model: nn.Module, family: Any, grid: np.ndarray, x: torch.Tensor,
                     y: torch.Tensor | None, idx: np.ndarray, batch: int, loss_obj: Loss,
                     report: VerificationReport) -> _Recomputed | None:
    """Every risk's losses at the needed grid points (the first risk's table with the recorded
    loss, options included), its p-values (each compared with its record) and the combined ones."""
    from .stats.risks import RiskSpec, calibrate_risks
    from .sweep import compute_loss_tables

    fields = ("loss", "alpha", "bound", "per_class", "gamma")
    risks = _risks_of(cert)
    specs = [RiskSpec(**{k: r[k] for k in fields}) for r in risks]
    names = list(dict.fromkeys(s.table for s in specs))
    tables = compute_loss_tables(model, family, grid, (x, y), [loss_obj if n == loss_obj.name else make_loss(n)
                                                               for n in names], batch_size=batch, progress=False)
    arrays = {n: t.losses for n, t in zip(names, tables, strict=True)}
    dense = {n: t.dense_losses for n, t in zip(names, tables, strict=True)}  # the drop's reference: the dense model
    labels = None if y is None else y.cpu().numpy()
    try:
        cal, each = calibrate_risks(arrays, specs, idx, delta=cert["delta"], labels=labels, dense=dense)
    except ValueError as err:  # e.g. a binomial bound recorded for a fractional loss
        report.add("risks", False, f"the recorded risks cannot be recomputed as recorded: {err}")
        return None
    for r, spec in zip(risks, specs, strict=True):
        got = each[spec.name]
        report.add(f"risks[{spec.name}].p_values", bool(np.allclose(got, r["p_values"][: got.size], rtol=1e-12, atol=0)),
                   f"{got.size} grid points recomputed with {r['bound']}")
    return _Recomputed(cal.p_values, cal.risk, arrays, dense, specs)


def _check_export(cert: Mapping[str, Any], exported: Any, state: dict[str, torch.Tensor] | None, model: nn.Module,
                  family: Any, grid: np.ndarray, decided: int, report: VerificationReport) -> None:
    """The exported model must be, tensor for tensor, the family's pruned model at λ̂ — and a
    physically smaller export must rebuild into the same modules (types, shapes, eps, padding…)."""
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
    _check_modules(exported, model, family, float(grid[decided]), report)


def _check_modules(exported: Any, model: nn.Module, family: Any, lam: float, report: VerificationReport) -> None:
    """A physically smaller export is rebuilt by users from its module records: they must be the
    records of the family's own pruned module, rebuilt here from the dense model, not from the file."""
    from .compact import PRUNED_FORMAT, _module_records, _plain

    module = family.exported_module(model, lam)
    if module is None:  # a masked state of the dense architecture: no module records
        return
    if not isinstance(exported, (str, Path)):
        report.note("pruned model modules", "a state_dict was given, not the exported file: its module records "
                    "(what users rebuild the smaller model from) were not checked")
        return
    payload = torch.load(exported, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != PRUNED_FORMAT:
        report.add("pruned model modules", False, f"{exported} is not a physically pruned module file ({PRUNED_FORMAT})")
        return
    want = _plain(_module_records(module))
    got = _plain(payload.get("modules"))
    bad = sorted(k for k in set(want) | set(got or {}) if (got or {}).get(k) != want.get(k))
    report.add("pruned model modules", not bad,
               f"all {len(want)} module records equal the family's pruned module" if not bad else
               f"module records differ from the family's pruned module at {bad[:3]}: recorded "
               f"{_show((got or {}).get(bad[0]))}, rebuilt {_show(want.get(bad[0]))}")


def _verify_pareto(cert: Mapping[str, Any], exported: Any, state: dict[str, torch.Tensor] | None, model: nn.Module,
                   x: torch.Tensor, y: torch.Tensor | None, idx: np.ndarray, batch: int, report: VerificationReport,
                   **context: Any) -> None:
    """Several families: rebuild every family, recompute every configuration's calibration losses
    and (where recomputable) cost, re-run Pareto testing with the recorded split seed, and require
    the same front, order, p-values and certified configuration; then the deployed family's λ̂,
    export, held-out test and cost as for one family."""
    from .multiknob import family_view

    grid = np.asarray(cert["grid"], dtype=np.float64)
    pt = _pareto_tables(cert, model, x[idx], None if y is None else y[idx], grid, batch, report, **context)
    if pt is None:
        return
    rec = cert["pareto"]
    result = _rerun_pareto(cert, pt, report)
    k, cal = family_view(pt, result, np.arange(idx.size), delta=cert["delta"], seed=int(rec["split_seed"]))
    decided = cal.lambda_index
    report.expect("lambda_index", cert["lambda_index"], decided)
    report.add("p_values", bool(np.allclose(cal.p_values, cert["p_values"], rtol=1e-12, atol=0)),
               f"the deployed family's {grid.size} testing-part p-values recomputed")
    family = pt.families[k]
    report.expect("pruning.config", cert["pruning"]["config"], dict(family.config))
    if decided >= 0:
        lam = float(grid[decided])
        report.expect("cal_risk", cert["cal_risk"], float(cal.risk[decided]))
        report.expect("sparsity_pool", cert["sparsity_pool"], family.sparsity(lam))
        rest = np.setdiff1d(np.arange(x.shape[0]), idx)
        if rest.size:
            _check_verifier_data(_Recomputed(cal.p_values, cal.risk, {n: np.zeros(0) for n in pt.tables[k]}, {},
                                             list(pt.risks)), model, family, lam,
                                 (x[rest], None if y is None else y[rest]), batch, make_loss(pt.risks[0].table), report,
                                 label="holdout test")
    _check_export(cert, exported, state, model, family, grid, decided, report)
    if cert.get("cost"):
        _check_cost(cert["cost"], model, family, grid, decided, x, report)


def _pareto_tables(cert: Mapping[str, Any], model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                   grid: np.ndarray, batch: int, report: VerificationReport, **context: Any) -> Any:
    """Every recorded family rebuilt, swept on the calibration points, its risks in mean form; the
    costs recomputed (latency: recorded). None when a family cannot be rebuilt."""
    from .errors import ConfigError
    from .multiknob import RECOMPUTABLE_OBJECTIVES, ParetoTables, _mean_form, family_costs
    from .pruning import FamilySpec
    from .stats import resolve_bound
    from .stats.risks import DROP, RiskSpec
    from .sweep import compute_loss_tables

    rec = cert["pareto"]
    fields = ("loss", "alpha", "per_class", "gamma")
    risks = [RiskSpec(**{k: r[k] for k in fields}, bound=r.get("requested_bound", r["bound"])) for r in cert["risks"]]
    names = list(dict.fromkeys(r.table for r in risks))
    example = torch.zeros_like(x[:2])
    specs, families, tables = [], [], []
    for k, conf in enumerate(rec["families"]):
        try:
            spec = FamilySpec.from_config(conf, group=f"pareto.families[{k}]")
            fam = spec.build(model, example_inputs=example, **context)
        except (ConfigError, ValueError, TypeError, KeyError) as err:
            report.add(f"pareto.families[{k}]", False, f"cannot rebuild it from {conf}: {err}")
            return None
        swept = compute_loss_tables(model, fam, grid, (x, y), [make_loss(n) for n in names], batch_size=batch,
                                    progress=False)
        specs.append(spec)
        families.append(fam)
        tables.append(dict(zip(names, swept, strict=True)))
    losses = np.concatenate([np.stack([_mean_form(r, t[r.table].losses, t[r.table].dense_losses) for r in risks])
                             for t in tables], axis=1)
    bounds = ["wsr" if r.loss == DROP else resolve_bound(r.bound, losses[i]) for i, r in enumerate(risks)]
    report.expect("pareto.bounds", rec["bounds"], bounds)
    alphas = [(1 + r.alpha) / 2 if r.loss == DROP else r.alpha for r in risks]
    report.expect("pareto.alphas_mean_form", rec["alphas_mean_form"], alphas)
    objective = rec["objective"]
    if objective in RECOMPUTABLE_OBJECTIVES:
        costs = np.concatenate([family_costs(model, f, grid, example, objective, batch) for f in families])
        report.add("pareto.costs", bool(np.allclose(costs, rec["costs"], rtol=1e-12, atol=0)),
                   f"{costs.size} configurations' {objective} recomputed")
    else:
        costs = np.asarray(rec["costs"], dtype=np.float64)
        report.note("pareto.costs", f"{objective} measured by the issuer (not re-derivable here): they order the "
                    "front; the order is the issuer's word that they were fixed before calibration")
    return ParetoTables(specs, grid, losses, costs, risks, alphas, bounds, objective, families, tables)


def _rerun_pareto(cert: Mapping[str, Any], pt: Any, report: VerificationReport) -> Any:
    """Pareto testing re-run with the recorded split seed; the front and the decision compared."""
    from .stats.pareto import pareto_test

    rec = cert["pareto"]
    result = pareto_test(pt.losses, pt.costs, pt.alphas, cert["delta"], bounds=pt.bounds,
                         opt_fraction=float(rec["opt_fraction"]), seed=int(rec["split_seed"]))
    report.expect("pareto.front", rec["front"], [int(c) for c in result.front])
    report.expect("pareto.order", rec["order"], [int(c) for c in result.order])
    for key in ("opt_pvalues", "test_pvalues"):
        got = getattr(result, key)
        same = len(rec[key]) == got.size and bool(np.allclose(got, rec[key], rtol=1e-12, atol=0))
        report.add(f"pareto.{key}", same, f"{got.size} p-values recomputed on the "
                   f"{'optimisation' if key == 'opt_pvalues' else 'testing'} part")
    got = np.asarray(result.front_risks, dtype=np.float64)
    same = np.shape(rec.get("front_risks_opt")) == got.shape and bool(np.allclose(got, rec["front_risks_opt"],
                                                                                    rtol=1e-12, atol=0))
    report.add("pareto.front_risks_opt", same, f"{got.size} optimisation-part risk estimates recomputed")
    report.expect("pareto.rejected", rec["rejected"], [bool(r) for r in result.rejected])
    report.expect("pareto.certified_config", rec["certified_config"], int(result.certified_index))
    return result


def _done(report: VerificationReport, t0: float) -> VerificationReport:
    report.seconds = time.perf_counter() - t0
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m confprune.verify",
        description="Re-derive a confprune certificate from the dense model and the data (see the README: "
                    "'What a certificate proves'). Exit 0: verified; 1: not verified; 2: cannot be checked; "
                    "3: verified with an issuer-chosen calibration set (not a plain pass).",
    )
    parser.add_argument("certificate", help="certificate.json, or a run directory holding it")
    parser.add_argument("pruned_model", nargs="?", help="the exported pruned_model.pt (omit when nothing was "
                        "certified; default: the run directory's pruned_model.pt when a directory is given)")
    parser.add_argument("--data-dir", default=os.environ.get("CONFPRUNE_DATA_DIR", "data"),
                        help="where datasets are read from (and fetched into, if missing): never the certificate's")
    parser.add_argument("--dataset-root", help="your copy of a dataset that lives under its own root (real PolypGen): "
                        "never the folder the certificate names")
    parser.add_argument("--dense", help="dense checkpoint (default: the one the certificate names; read only)")
    args = parser.parse_args(argv)
    if args.pruned_model is None and Path(args.certificate).is_dir() and (Path(args.certificate) / "pruned_model.pt").is_file():
        args.pruned_model = str(Path(args.certificate) / "pruned_model.pt")
    try:
        model, blob, data = _cli_inputs(args)
    except _CannotCheck as err:
        print(f"confprune.verify: {err}", file=sys.stderr)
        return EXIT_CODES["CANNOT BE CHECKED"]
    try:
        report = verify_certificate(
            args.certificate, args.pruned_model, model.eval(), (data.pool_inputs, data.pool_targets),
            train_inputs=lambda: data.train_inputs, trajectory=dict(blob.get("trajectory", {})) or None,
            data_from_registry=True,
        )
    except (KeyError, TypeError, IndexError, AttributeError) as err:  # a field of the wrong type or shape
        print(f"confprune.verify: cannot be checked: malformed certificate ({type(err).__name__}: {err})", file=sys.stderr)
        return EXIT_CODES["CANNOT BE CHECKED"]
    cert = load_certificate(args.certificate)
    if "file_sha256" in cert["model"]:  # a pretrained model: the file verify loaded is the one certified
        from .models import weights_file
        from .models.checkpoint import file_sha256

        conf = {**cert["model"]["config"], "data_dir": args.data_dir}
        report.expect("model.file_sha256", cert["model"]["file_sha256"],
                      file_sha256(args.dense or (weights_file(conf) if conf["name"] == "crepe" else cert["model"]["checkpoint"])))
    report.expect("data.synthetic", cert["data"].get("synthetic"), data.synthetic)
    report.expect("data.description", cert["data"].get("description"), data.description)
    print(report)
    return EXIT_CODES[report.status]


class _CannotCheck(Exception):
    """The inputs a verification needs are missing or unreadable (exit 2)."""


def _cli_inputs(args: argparse.Namespace) -> tuple[nn.Module, Mapping[str, Any], Any]:
    """The dense model (from the checkpoint), its blob and the dataset, as the verifier names them."""
    from .data import load_dataset
    from .models import PRETRAINED, build_model, weights_file

    try:
        cert = load_certificate(args.certificate)
    except (OSError, ValueError) as err:
        raise _CannotCheck(err) from None
    if "config" not in cert.get("model", {}):
        raise _CannotCheck("this certificate does not record a model config (made by confprune.certify?): use "
                           "confprune.verify_certificate(...) from Python with your dense model and data")
    if args.pruned_model:
        if not Path(args.pruned_model).is_file():
            raise _CannotCheck(f"pruned model {args.pruned_model} not found")
        try:
            _load_state(args.pruned_model)
        except Exception as err:  # noqa: BLE001 - a file that is no export at all cannot be checked
            raise _CannotCheck(f"pruned model {args.pruned_model} cannot be read: {str(err).splitlines()[0]}") from None
    ckpt = Path(args.dense or cert["model"].get("checkpoint", ""))
    if cert["model"]["config"].get("name") == "crepe" and not args.dense:  # published weights: fetched here
        ckpt = Path(weights_file({**cert["model"]["config"], "data_dir": args.data_dir}))
    if not ckpt.is_file():
        raise _CannotCheck(f"dense checkpoint {ckpt} not found: pass --dense <checkpoint.pt>")
    try:
        if cert["model"]["config"].get("name") == "crepe":  # the published weights, fetched and hash-checked here
            model, blob = build_model({**cert["model"]["config"], "data_dir": args.data_dir}), {}
        elif cert["model"]["config"].get("name") in PRETRAINED:  # the user's file, loaded as the runner loads it
            model, blob = build_model({**cert["model"]["config"], "path": str(ckpt)}), {}
        else:
            model = build_model(cert["model"]["config"])
            blob = torch.load(ckpt, map_location="cpu", weights_only=True)
            model.load_state_dict(blob["state_dict"] if "state_dict" in blob else blob)
    except Exception as err:  # noqa: BLE001 - any failure to read the checkpoint means it cannot be checked
        raise _CannotCheck(f"dense checkpoint {ckpt} cannot be loaded: {str(err).splitlines()[0]}") from None
    spec = dict(cert["data"].get("dataset") or {})
    if spec.get("root") is not None and not args.dataset_root:
        raise _CannotCheck(f"the certificate's data live under their own root ({spec['root']}); verify reads only "
                           "data you name: pass --dataset-root <your copy>")
    if "root" in spec:
        spec["root"] = args.dataset_root
    if "path" in spec:  # dataset=tensors: the verifier's copy of the folder, never the certificate's
        if not args.dataset_root:
            raise _CannotCheck(f"the certificate's data are a folder of arrays ({spec['path']}); verify reads only "
                               "data you name: pass --dataset-root <your copy of that folder>")
        spec["path"], spec["train_path"] = args.dataset_root, None
    try:
        data = load_dataset({**spec, "data_dir": args.data_dir})
    except Exception as err:  # noqa: BLE001 - the dataset cannot be had: nothing to check against
        raise _CannotCheck(f"the certificate's dataset cannot be loaded: {str(err).splitlines()[0]}") from None
    return model, blob, data


if __name__ == "__main__":
    sys.exit(main())
