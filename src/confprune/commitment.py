"""The deployment calibration draw, derived from a commitment to what precedes calibration.

A seed the issuer picks can be searched after the losses are known: with a cached loss table a
search over ``split_seed`` finds, in seconds, a calibration set on which a false claim passes
(issue 25). The runner therefore draws the deployment calibration set (and Pareto testing's
optimisation/testing split) from a seed that is *derived*, not chosen: the SHA-256 of a canonical
record of everything fixed before calibration — the dense weights' checksum, the pool's
fingerprint and size, the pruning families, the risks (loss, α, bound, options), δ, the FWER
procedure, the grid, n_cal and Pareto testing's optimisation fraction. ``verify`` re-derives the
record from the certificate's own, checked, fields, recomputes the digest and redraws the points.

What the commitment does not stop (the project's own statement, also in the certificate's
``unprovable`` list and the README): each *material* change to a committed field — another α in
its tenth digit, another grid, another n_cal, a dense model retrained with another seed — is a
fresh draw, so an issuer willing to run many honest-looking configurations can still shop among
them. Fields that change nothing (the sweep's batch size, the validation splits' seed, the
pruning seed of a criterion that draws nothing) are kept out of the record so that they cannot
be used for free re-draws. Verify's held-out test of the claim on the points the issuer did not
calibrate on (``HOLDOUT_LEVEL``) bounds what such shopping can buy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Version of the committed record; part of the digest.
COMMITMENT_VERSION = 1
#: The source name of a committed draw in a certificate's ``calibration`` block.
COMMITTED = "committed"
_RISK_KEYS = ("loss", "alpha", "bound", "per_class", "gamma")


#: Criteria that draw nothing with the family's seed (``random`` and the data-informed criteria,
#: whose training batch is a seeded draw, do): their seed is left out of the commitment.
SEED_FREE_CRITERIA = frozenset({"magnitude", "mu", "l1", "l2"})


def family_commitment(config: Mapping[str, Any]) -> dict[str, Any]:
    """A family's spec as committed: its config, without the seed where the criterion draws
    nothing with it (a free re-draw otherwise)."""
    out = {k: _plain(v) for k, v in sorted(dict(config).items())}
    if out.get("criterion") in SEED_FREE_CRITERIA:
        out.pop("seed", None)
    return out


def risk_commitment(risks: Sequence[Any]) -> list[dict[str, Any]]:
    """The risks as committed (RiskSpec objects or certificate records with ``requested_bound``)."""
    out = []
    for r in risks:
        rec = dict(r) if isinstance(r, Mapping) else {k: getattr(r, k) for k in _RISK_KEYS}
        rec["bound"] = rec.get("requested_bound", rec["bound"])
        out.append({k: _plain(rec.get(k)) for k in _RISK_KEYS})
    return out


def make_commitment(
    *, dense_checksum: str, pool_fingerprint: str, pool_size: int, n_cal: int, families: Sequence[Mapping[str, Any]],
    risks: Sequence[Any], loss_options: Mapping[str, Any], delta: float, fwer: str, fwer_options: Mapping[str, Any],
    grid: Sequence[float], opt_fraction: float | None = None,
) -> dict[str, Any]:
    """The committed record (plain JSON values). ``families``: :func:`family_commitment` records."""
    return {
        "version": COMMITMENT_VERSION,
        "dense_checksum": str(dense_checksum),
        "pool_fingerprint": str(pool_fingerprint),
        "pool_size": int(pool_size),
        "n_cal": int(n_cal),
        "families": [dict(f) for f in families],
        "risks": risk_commitment(risks),
        "loss_options": {k: _plain(v) for k, v in sorted(dict(loss_options).items())},
        "delta": float(delta),
        "fwer": str(fwer),
        "fwer_options": {k: _plain(v) for k, v in sorted(dict(fwer_options).items())},
        "grid": [float(g) for g in np.asarray(grid, dtype=np.float64)],
        "opt_fraction": None if opt_fraction is None else float(opt_fraction),
    }


def table_commitment(
    model: Any, configs: Sequence[Mapping[str, Any]], table: Any, risks: Sequence[Any], *, delta: float,
    fwer: Any = "fixed_sequence", n_cal: int, loss_options: Mapping[str, Any] | None = None,
    opt_fraction: float | None = None,
) -> dict[str, Any]:
    """The commitment for a calibration on a computed loss table over a registered pool (the
    library route to what the runner draws): ``configs`` are the families' configs (one for LTT,
    several for Pareto testing, whose procedure is then ``pareto_testing``)."""
    from .integrity import state_dict_checksum
    from .stats import make_fwer

    return commit_families(
        dense_checksum=state_dict_checksum(model.state_dict()), pool_fingerprint=table.data_fingerprint,
        pool_size=table.losses.shape[1], n_cal=n_cal, configs=configs, risks=risks, loss_options=loss_options or {},
        delta=delta, procedure=make_fwer(fwer), grid=table.grid,
        opt_fraction=0.5 if opt_fraction is None else opt_fraction,
    )


def commit_families(
    *, dense_checksum: str, pool_fingerprint: str, pool_size: int, n_cal: int, configs: Sequence[Mapping[str, Any]],
    risks: Sequence[Any], loss_options: Mapping[str, Any], delta: float, procedure: Any, grid: Sequence[float],
    opt_fraction: float,
) -> dict[str, Any]:
    """The commitment of one family (LTT with ``procedure``) or several (Pareto testing at
    ``opt_fraction``; ``procedure`` is then unused): the one place the runner and the library
    turn families and a procedure into the committed fields."""
    from .export import procedure_options

    pareto = len(configs) > 1
    return make_commitment(
        dense_checksum=dense_checksum, pool_fingerprint=pool_fingerprint, pool_size=pool_size, n_cal=n_cal,
        families=[family_commitment(c) for c in configs], risks=risks, loss_options=loss_options, delta=delta,
        fwer="pareto_testing" if pareto else procedure.name, fwer_options={} if pareto else procedure_options(procedure),
        grid=grid, opt_fraction=opt_fraction if pareto else None,
    )


def digest(commitment: Mapping[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON (sorted keys, no whitespace, floats by repr)."""
    text = json.dumps(commitment, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def seed_of(hexdigest: str) -> int:
    """The draw's seed: the digest's first 60 bits."""
    return int(hexdigest[:15], 16)


def committed_draw(commitment: Mapping[str, Any]) -> dict[str, Any]:
    """The certificate's ``calibration`` block for a draw derived from ``commitment``."""
    d = digest(commitment)
    return {"source": COMMITTED, "pool_size": int(commitment["pool_size"]), "n_cal": int(commitment["n_cal"]),
            "commitment": dict(commitment), "digest": d, "seed": seed_of(d)}


def commitment_of_certificate(cert: Mapping[str, Any], pool_fingerprint: str, pool_size: int) -> dict[str, Any]:
    """The record a certificate's own fields commit to (``pool_fingerprint``/``pool_size``: of the
    data the verifier loaded). A certificate whose recorded commitment differs from this was
    drawn for another claim."""
    pareto = cert.get("pareto")
    if pareto:
        families = [family_commitment(f) for f in pareto["families"]]
    else:
        families = [family_commitment(cert["pruning"]["config"])]
    risks = cert.get("risks") or [{"loss": cert["loss"]["name"], "alpha": cert["alpha"], "bound": cert["bound"],
                                   "per_class": False, "gamma": None}]
    return make_commitment(
        dense_checksum=cert["model"]["dense_checksum"], pool_fingerprint=pool_fingerprint, pool_size=pool_size,
        n_cal=cert["n_cal"], families=families, risks=risks, loss_options=cert["loss"].get("options", {}),
        delta=cert["delta"], fwer=cert["fwer"], fwer_options=cert.get("fwer_options") or {}, grid=cert["grid"],
        opt_fraction=pareto["opt_fraction"] if pareto else None,
    )


def check_draw(cert: Mapping[str, Any], pool_fingerprint: str, pool_size: int) -> list[tuple[str, bool, str]]:
    """(name, ok, detail) checks of a committed draw: the recorded commitment is the one the
    certificate's own fields (and the data's fingerprint and size) make, its digest and seed are
    recomputed, and the calibration indices are the points that seed draws. The issuer runs
    these before it hands a certificate out (a wiring slip between the runner's draw and the
    claim is caught there); ``verify`` runs them on the data it loaded."""
    from .calibrate import deployment_indices

    draw = cert.get("calibration") or {}
    recorded = draw.get("commitment") or {}
    want = commitment_of_certificate(cert, pool_fingerprint, pool_size)
    bad = sorted(k for k in set(want) | set(recorded) if recorded.get(k) != want.get(k))
    out = [("calibration.commitment", not bad,
            "the certificate's model, data, families, risks, delta, procedure, grid and n_cal" if not bad else
            f"differs from the certificate's own fields at {', '.join(bad)}: recorded "
            f"{str(recorded.get(bad[0]))[:80]}, certificate {str(want.get(bad[0]))[:80]}")]
    d = digest(want)
    out.append(("calibration.digest", draw.get("digest") == d and draw.get("seed") == seed_of(d),
                f"sha256 of the commitment {d[:16]}…, seed {seed_of(d)}"))
    idx = np.asarray(cert.get("calibration_indices", []), dtype=np.int64)
    n_cal = int(want["n_cal"])
    redrawn = deployment_indices(int(pool_size), n_cal, seed_of(d)) if 1 <= n_cal <= pool_size else None
    same = redrawn is not None and redrawn.shape == idx.shape and bool(np.array_equal(redrawn, idx))
    out.append(("calibration indices", same, f"redrawn from the commitment's seed (pool {pool_size}, n_cal {n_cal}): "
                + ("identical" if same else "DIFFERENT from the recorded indices")))
    pareto = cert.get("pareto")
    if pareto:
        out.append(("pareto.split_seed", pareto.get("split_seed") == seed_of(d),
                    "the optimisation/testing split drawn from the commitment's seed"))
    return out


def _plain(value: Any) -> Any:
    """JSON-plain values (tuples as lists, numpy scalars as Python numbers)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


__all__ = ["COMMITMENT_VERSION", "COMMITTED", "SEED_FREE_CRITERIA", "check_draw", "commit_families", "commitment_of_certificate", "committed_draw", "digest",
           "family_commitment", "make_commitment", "risk_commitment", "seed_of",
           "table_commitment"]
