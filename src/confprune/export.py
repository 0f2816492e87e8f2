"""Export the certified pruned model (a plain state_dict) and its auditable certificate."""

from __future__ import annotations

import json
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
from .calibrate import Certification
from .pruning import PruningFamily
from .train import atomic_torch_save, state_dict_checksum


def pruned_state_dict(model: nn.Module, family: PruningFamily, lam: float) -> dict[str, torch.Tensor]:
    """The dense model's state_dict with the pool pruned at λ (exact zeros); loads into the dense
    architecture with ``load_state_dict``."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = {k: state[k] for k in family.ranks}
    state.update({k: v.clone() for k, v in family.apply(params, lam).items()})
    return state


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


def write_json(obj: Any, path: str | Path) -> None:
    """Atomic JSON write (temp file + rename): a reader never sees a half-written file."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default, allow_nan=True)
            fh.write("\n")

    atomic_write(path, write)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def build_certificate(
    cert: Certification,
    *,
    family: PruningFamily,
    model: nn.Module,
    pruned: Mapping[str, torch.Tensor] | None,
    loss: Mapping[str, Any],
    data: Mapping[str, Any],
    model_info: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    cal = cert.calibration
    total = sum(p.numel() for p in model.parameters())
    pruned_count = 0 if not cert.certified else int(round(cert.sparsity_hat * family.pool_size))
    claim = (
        f"With probability at least 1 - delta = {1 - cal.delta:g} over the draw of the {cal.n} "
        f"exchangeable calibration points, the expected {loss['name']} loss of the pruned model is at "
        f"most alpha = {cal.alpha:g} (Learn-Then-Test, {cal.bound} p-values, {cal.fwer} FWER control)."
        if cert.certified
        else "Nothing was certified: no grid point passed the FWER procedure at this (alpha, delta); "
        "no pruned model is exported."
    )
    return {
        "certified": cert.certified,
        "claim": claim,
        "alpha": cal.alpha,
        "delta": cal.delta,
        "bound": cal.bound,
        "fwer": cal.fwer,
        "n_cal": cal.n,
        "lambda_hat": cert.lambda_hat,
        "lambda_index": cert.lambda_index,
        "sparsity_pool": cert.sparsity_hat,
        "sparsity_model": (pruned_count / total) if cert.certified else None,
        "cal_risk": cert.cal_risk,
        "loss": dict(loss),
        "pruning": {
            "criterion": family.criterion,
            "scope": family.scope,
            "pool_parameters": list(family.ranks),
            "pool_size": family.pool_size,
            "model_parameters": total,
        },
        "grid": [float(x) for x in cert.grid],
        "grid_evaluated": int(len(cal.p_values)),
        "p_values": [float(x) for x in cal.p_values],
        "cal_risk_per_lambda": [float(x) for x in cal.risk],
        "data": dict(data),
        "calibration_indices": [int(i) for i in cert.cal_indices],
        "model": {
            **dict(model_info),
            "dense_checksum": state_dict_checksum(model.state_dict()),
            "pruned_checksum": state_dict_checksum(pruned) if pruned is not None else None,
        },
        "versions": library_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **dict(extra or {}),
    }


def save_export(
    output_dir: str | Path, certificate: Mapping[str, Any], pruned: Mapping[str, torch.Tensor] | None
) -> dict[str, str]:
    """Write ``certificate.json`` and (when certified) ``pruned_model.pt``; returns their paths."""
    out = Path(output_dir)
    paths = {"certificate": str(out / "certificate.json")}
    if pruned is not None:
        atomic_torch_save(dict(pruned), out / "pruned_model.pt")
        paths["pruned_model"] = str(out / "pruned_model.pt")
    write_json(certificate, out / "certificate.json")
    return paths
