"""Audit an exported certificate: ``python -m confprune.verify certificate.json pruned_model.pt``.

Re-computes the calibration risk of the exported pruned model on the recorded calibration points
and checks it, the p-value and every recorded checksum and fingerprint against the certificate.
A tampered model, other data, or a claim that does not follow from the numbers is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .forward import as_batches, forward_batched
from .integrity import StreamingFingerprint, fingerprint, state_dict_checksum
from .losses import Loss, make_loss
from .stats import pvalues_from_losses


@dataclass
class VerificationReport:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    recomputed_cal_risk: float | None = None

    @property
    def ok(self) -> bool:
        return all(passed for _, passed, _ in self.checks)

    def add(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append((name, bool(passed), detail))

    def __str__(self) -> str:
        lines = [f"{'PASS' if ok else 'FAIL'}  {name}: {detail}" for name, ok, detail in self.checks]
        lines.append("certificate VERIFIED" if self.ok else "certificate NOT verified")
        return "\n".join(lines)


def _load_json(obj: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj) if isinstance(obj, Mapping) else json.loads(Path(obj).read_text())


def _load_state(obj: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(obj) if isinstance(obj, Mapping) else torch.load(obj, map_location="cpu", weights_only=True)


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


def verify_certificate(
    certificate: str | Path | Mapping[str, Any],
    pruned_model: str | Path | Mapping[str, torch.Tensor],
    model: nn.Module,
    data: Any,
    *,
    loss: Loss | Callable[..., torch.Tensor] | None = None,
    dense_model: nn.Module | None = None,
    batch_size: int = 500,
) -> VerificationReport:
    """Check a certificate against the exported pruned weights and the data it was computed on.

    ``model`` provides the architecture (its weights are replaced by the pruned ones); ``data`` is
    the full data set whose indices the certificate records (the pool for Hydra runs, the
    calibration data for :func:`confprune.certify`). Losses that compare with the dense model
    (disagreement, tv_distance) need ``dense_model``. Custom callable losses must be passed again.
    """
    from .api import resolve_loss

    cert = _load_json(certificate)
    state = _load_state(pruned_model)
    report = VerificationReport()
    if not cert.get("certified"):
        report.add("certified", False, "the certificate certifies nothing; there is no pruned model to verify")
        return report
    report.add("pruned checksum", state_dict_checksum(state) == cert["model"]["pruned_checksum"],
               "sha256 of the exported state_dict vs the certificate")
    pool = cert["pruning"]["pool_parameters"]
    missing = [k for k in pool if k not in state]
    zeros = sum(int((state[k] == 0).sum()) for k in pool if k in state)
    need = int(round(cert["sparsity_pool"] * cert["pruning"]["pool_size"]))
    report.add("sparsity", not missing and zeros >= need, f"{zeros} zeros in the pruning pool, certificate says {need} pruned")

    x, y, data_fp = _collect(data, batch_size)
    recorded_fp = cert["data"].get("data_fingerprint") or cert["data"].get("pool_fingerprint")
    report.add("data fingerprint", data_fp == recorded_fp, "sha256 of the supplied data vs the certificate")
    idx = np.asarray(cert["calibration_indices"], dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= x.shape[0]):
        report.add("calibration indices", False, f"indices up to {idx.max()} but the data has {x.shape[0]} points")
        return report
    cal_fp = fingerprint(x, y, idx)
    report.add("calibration fingerprint", cal_fp == cert["data"].get("calibration_fingerprint"),
               f"sha256 of the {idx.size} recorded calibration points")

    if loss is not None:
        loss_obj = resolve_loss(loss)
    else:
        recorded = {k: v for k, v in cert["loss"].items() if k not in ("name", "binary", "labeled")}
        loss_obj = make_loss(cert["loss"]["name"], **recorded)
    pruned = model
    try:
        pruned.load_state_dict(state, strict=True)
    except RuntimeError as err:
        report.add("architecture", False, f"the pruned state_dict does not load into the model: {err}")
        return report
    cal_x = x[torch.as_tensor(idx)]
    cal_y = None if y is None else y[torch.as_tensor(idx)]
    out = torch.cat(forward_batched(pruned, cal_x, batch_size=batch_size))
    if dense_model is not None:
        report.add("dense checksum", state_dict_checksum(dense_model.state_dict()) == cert["model"]["dense_checksum"],
                   "sha256 of the supplied dense model vs the certificate")
        dense_out = torch.cat(forward_batched(dense_model, cal_x, batch_size=batch_size))
    elif not loss_obj.reads_dense:
        dense_out = out  # the loss ignores the dense output (a fact of the loss registry)
    else:
        report.add("dense model", False, f"loss {loss_obj.name!r} compares with the dense model: pass dense_model")
        return report
    values = loss_obj(dense_out, out, cal_y).double().numpy()
    risk = float(values.sum() / values.size)
    report.recomputed_cal_risk = risk
    report.add("calibration risk", risk == cert["cal_risk"], f"recomputed {risk!r}, certificate {cert['cal_risk']!r}")
    p = float(pvalues_from_losses(cert["bound"], values, cert["alpha"], cert["delta"]))
    recorded = cert["p_values"][cert["lambda_index"]]
    report.add("p-value", p <= cert["delta"] and np.isclose(p, recorded, rtol=1e-9, atol=0),
               f"recomputed p = {p:.6g} (certificate {recorded:.6g}) ≤ delta = {cert['delta']:g}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Verify a confprune certificate produced by `python -m confprune.run`."
    )
    parser.add_argument("certificate")
    parser.add_argument("pruned_model")
    parser.add_argument("--data", default="auto", help="'auto' (the dataset recorded in the certificate) or a .pt file holding (inputs, targets)")
    parser.add_argument("--dense", help="dense checkpoint (default: the cached checkpoint recorded in the certificate)")
    args = parser.parse_args(argv)
    from .data import load_dataset
    from .models import build_model

    cert = _load_json(args.certificate)
    if "config" not in cert.get("model", {}):
        parser.error("this certificate does not record a model config (made by confprune.certify?): "
                     "use confprune.verify_certificate(...) from Python with your model and data")
    model = build_model(cert["model"]["config"])
    if args.data == "auto":
        data = load_dataset(cert["data"]["dataset"])
        pool = (data.pool_inputs, data.pool_targets)
    else:
        pool = tuple(torch.load(args.data, weights_only=True))
    dense = None
    ckpt = args.dense or cert["model"].get("checkpoint")
    if ckpt and Path(ckpt).exists():
        dense = build_model(cert["model"]["config"])
        blob = torch.load(ckpt, map_location="cpu", weights_only=True)
        dense.load_state_dict(blob["state_dict"] if "state_dict" in blob else blob)
    report = verify_certificate(cert, args.pruned_model, model, pool, dense_model=dense)
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
