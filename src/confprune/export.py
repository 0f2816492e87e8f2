"""Export the certified pruned model (a plain state_dict) and its auditable certificate."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from .cache import atomic_write
from .integrity import state_dict_checksum
from .pruning import Family
from .record import write_json
from .stats import Calibration


def pruned_state_dict(model: nn.Module, family: Family, lam: float) -> dict[str, torch.Tensor]:
    """The exported state_dict of the model pruned at λ. Unstructured: the dense model's
    state_dict with the pool pruned (exact zeros; loads into the dense architecture with
    ``load_state_dict``). Channel: the physically smaller module's state_dict (see
    :func:`pruned_module`)."""
    return family.export_state(model, lam)


def library_versions() -> dict[str, str]:
    import hydra
    import omegaconf
    import scipy

    return {
        "confprune": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "hydra-core": hydra.__version__,
        "omegaconf": omegaconf.__version__,
    }


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temp file and a rename (see :func:`confprune.cache.atomic_write`).
    Saved through a file handle, so the archive's inner name does not depend on the temp file's
    name: the same object gives the same bytes."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)

    atomic_write(path, write)


def claim_text(certified: bool, alpha: float, delta: float, n: int, loss: str, bound: str, fwer: str,
               risks: list[dict[str, Any]] | None = None) -> str:
    """The certificate's sentence; a verifier regenerates it from the other fields."""
    if not certified:
        return ("Nothing was certified: no grid point passed the FWER procedure at this (alpha, delta); "
                "no pruned model is exported.")
    if risks and len(risks) == 1 and risks[0]["loss"] != "accuracy_drop" and not risks[0]["per_class"]:
        loss, alpha, bound = risks[0]["loss"], risks[0]["alpha"], risks[0]["bound"]  # one mean risk: its sentence
        risks = None if fwer != "pareto_testing" else risks
    if risks:
        parts = [
            (f"the accuracy drop relative to the dense model (E[1{{pruned wrong}} - 1{{dense wrong}}]) is at most {r['alpha']:g}"
             if r["loss"] == "accuracy_drop" else
             f"the expected {r['loss']} loss {'of every class ' if r['per_class'] else ''}is at most {r['alpha']:g}")
            + f" ({r['bound']})" for r in risks
        ]
        how = ("Pareto testing over the declared pruning families and ratios: the front found on a seeded "
               "optimisation part, tested in fixed sequence on the rest; the maximum of the risks' p-values"
               if fwer == "pareto_testing" else f"Learn-Then-Test, the maximum of the risks' p-values, {fwer} FWER control")
        return (f"With probability at least 1 - delta = {1 - delta:g} over the draw of the {n} exchangeable "
                f"calibration points, for the pruned model at once: {'; '.join(parts)} ({how}).")
    return (f"With probability at least 1 - delta = {1 - delta:g} over the draw of the {n} exchangeable "
            f"calibration points, the expected {loss} loss of the pruned model is at most alpha = {alpha:g} "
            f"(Learn-Then-Test, {bound} p-values, {fwer} FWER control).")


#: What no verification of a certificate can establish (README "What a certificate proves").
UNPROVABLE = (
    "that the calibration data are exchangeable with the data the model will see",
    "that the dense model never saw the calibration data, beyond the training set verify is given",
    "how an issuer chose an issuer-chosen calibration set",
    "that the committed configuration (alpha, grid, n_cal, dense model, ...) was not itself chosen among many for "
    "its draw: each material change is a fresh draw, and a violation too small for the held-out test (level 1e-3) "
    "to reject could be bought that way",
)


def procedure_options(procedure: Any) -> dict[str, Any]:
    """An FWER procedure's options (its dataclass fields besides ``name``)."""
    import dataclasses

    if not dataclasses.is_dataclass(procedure):
        return {}
    return {f.name: getattr(procedure, f.name) for f in dataclasses.fields(procedure) if f.name != "name"}


def build_certificate(
    cal: Calibration,
    *,
    grid: np.ndarray,
    sparsity: np.ndarray,
    cal_indices: np.ndarray,
    calibration_draw: Mapping[str, Any] | None,
    procedure: Any,
    family: Family,
    model: nn.Module,
    pruned: Mapping[str, torch.Tensor] | None,
    loss: Mapping[str, Any],
    data: Mapping[str, Any],
    model_info: Mapping[str, Any],
    sweep: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    risks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The certificate of one calibration: the claim and everything a verifier needs to re-derive
    it (see README "What a certificate proves").

    ``grid`` (G,) is the grid fixed in advance, ``sparsity`` (G',) the pool fraction removed at
    each evaluated grid point, ``cal_indices`` the calibration points in the order used;
    ``calibration_draw`` says how they were drawn (``{"source": "seeded", "pool_size", "n_cal",
    "seed"}``: recomputable) or None when the issuer supplied the calibration set (a verifier
    cannot audit how it was chosen). ``sweep`` records how the losses were computed (batch size).
    """
    certified = cal.certified
    lambda_hat = float(grid[cal.lambda_index]) if certified else None
    sparsity_hat = float(sparsity[cal.lambda_index]) if certified else None
    cal_risk = float(cal.risk[cal.lambda_index]) if certified else None
    total = sum(p.numel() for p in model.parameters())
    pruned_count = 0 if not certified else int(round(sparsity_hat * family.pool_size))
    return {
        "certified": certified,
        "claim": claim_text(certified, cal.alpha, cal.delta, cal.n, loss["name"], cal.bound, cal.fwer, risks),
        "risks": risks,
        "alpha": cal.alpha,
        "delta": cal.delta,
        "bound": cal.bound,
        "fwer": cal.fwer,
        "fwer_options": procedure_options(procedure),
        "n_cal": cal.n,
        "lambda_hat": lambda_hat,
        "lambda_index": cal.lambda_index,
        "sparsity_pool": sparsity_hat,
        "sparsity_model": (pruned_count / total) if certified else None,
        "cal_risk": cal_risk,
        "loss": dict(loss),
        "pruning": {
            "criterion": family.criterion,
            "scope": family.scope,
            "config": dict(family.config),
            "score_inputs": family.score_info,
            "trajectory_checksum": family.trajectory_checksum,
            "structure": family.structure,
            "pool_parameters": list(family.parameter_names),
            "pool_size": family.pool_size,
            "model_parameters": total,
        },
        "grid": [float(x) for x in grid],
        "grid_evaluated": int(len(cal.p_values)),
        "p_values": [float(x) for x in cal.p_values],
        "cal_risk_per_lambda": [float(x) for x in cal.risk],
        "sweep": dict(sweep),
        "data": dict(data),
        "calibration": dict(calibration_draw) if calibration_draw is not None else {"source": "issuer"},
        "calibration_indices": [int(i) for i in cal_indices],
        "model": {
            **dict(model_info),
            "dense_checksum": state_dict_checksum(model.state_dict()),
            "pruned_checksum": state_dict_checksum(pruned) if pruned is not None else None,
        },
        "versions": library_versions(),
        "unprovable": list(UNPROVABLE),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **dict(extra or {}),
    }


def save_export(
    output_dir: str | Path, certificate: Mapping[str, Any], pruned: Mapping[str, torch.Tensor] | None,
    module: nn.Module | None = None,
) -> dict[str, str]:
    """Write ``certificate.json`` and, when certified, the pruned model; returns their paths.

    Unstructured: ``pruned_model.pt`` (a plain state_dict of the dense architecture, zeros
    included) and ``pruned_model.sparse.pt`` (the same tensors in a compact bitmask/CSR encoding:
    :func:`confprune.compact.load_sparse_state`). Channel (``module`` given): ``pruned_model.pt`` is
    the physically smaller module (:func:`confprune.compact.load_pruned_module` rebuilds it from a
    dense instance of the architecture).
    """
    from .compact import save_pruned_module, save_sparse_state

    out = Path(output_dir)
    paths = {"certificate": str(out / "certificate.json")}
    if module is not None:
        save_pruned_module(module, out / "pruned_model.pt")
        paths["pruned_model"] = str(out / "pruned_model.pt")
    elif pruned is not None:
        atomic_torch_save(dict(pruned), out / "pruned_model.pt")
        save_sparse_state({k: v.contiguous() for k, v in pruned.items()}, out / "pruned_model.sparse.pt")
        paths["pruned_model"] = str(out / "pruned_model.pt")
        paths["pruned_model_sparse"] = str(out / "pruned_model.sparse.pt")
    write_json(certificate, out / "certificate.json")
    return paths


def load_export(path: str | Path) -> dict[str, torch.Tensor]:
    """The exported state_dict in a ``pruned_model.pt`` (a plain state_dict, or the state_dict of a
    physically smaller module) or a ``pruned_model.sparse.pt``."""
    from .compact import PRUNED_FORMAT, SPARSE_FORMAT, decode_tensor

    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, dict) and blob.get("format") == PRUNED_FORMAT:
        return dict(blob["state_dict"])
    if isinstance(blob, dict) and blob.get("format") == SPARSE_FORMAT:
        return {k: decode_tensor(r) for k, r in blob["tensors"].items()}
    return dict(blob)


CERTIFICATE_KEYS = ("certified", "claim", "alpha", "delta", "bound", "fwer", "fwer_options", "n_cal", "lambda_hat",
                    "lambda_index", "sparsity_pool", "sparsity_model", "cal_risk", "loss", "pruning", "grid",
                    "grid_evaluated", "p_values", "sweep", "data", "calibration", "calibration_indices", "model")


def load_certificate(path: str | Path) -> dict[str, Any]:
    """A certificate written by :func:`save_export` (its file or the directory holding it);
    refuses a file that is not one, naming what is missing."""
    import json

    path = Path(path)
    if path.is_dir():
        path = path / "certificate.json"
    cert = json.loads(path.read_text())
    missing = [k for k in CERTIFICATE_KEYS if k not in cert] if isinstance(cert, dict) else list(CERTIFICATE_KEYS)
    if missing:
        raise ValueError(f"{path} is not a confprune certificate: missing {', '.join(missing)}")
    return cert
