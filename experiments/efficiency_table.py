"""The certified-efficiency table from finished runs: what the certified model costs against the
dense one, per structure (``bash experiments/efficiency_table.sh`` runs the sweeps first).

    python experiments/efficiency_table.py <sweep dir> [<sweep dir> ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from confprune.record import read_summary


def row(s) -> dict:
    dense, deploy = s.cost.get("dense", {}), s.cost.get("deploy") or {}
    lat_d, lat_c = dense.get("latency", {}), deploy.get("latency", {})
    big = max((k for k in lat_d if k.startswith("batch_")), key=lambda k: int(k.split("_")[1]), default=None)

    def speedup(key: str | None) -> float | None:
        if not key or key not in lat_c:
            return None
        return lat_d[key]["median_s"] / lat_c[key]["median_s"]

    return {
        "model": s.model, "loss": s.loss, "alpha": s.alpha, "delta": s.delta, "structure": s.structure,
        "criterion": s.criterion, "lambda_hat": s.lambda_hat.deploy, "sparsity_model": s.sparsity_hat.deploy_model,
        "certified_fraction": s.certified_fraction, "iid_coverage": s.iid_coverage,
        "params": deploy.get("parameters"), "params_dense": dense.get("parameters"),
        "macs": deploy.get("macs"), "macs_dense": dense.get("macs"),
        "mac_reduction": dense["macs"] / deploy["macs"] if deploy.get("macs") else None,
        "bytes": deploy.get("bytes"), "bytes_dense": dense.get("bytes"),
        "bytes_ratio": deploy["bytes"] / dense["bytes"] if deploy.get("bytes") else None,
        "latency_b1_ms": 1e3 * lat_c["batch_1"]["median_s"] if "batch_1" in lat_c else None,
        "latency_b1_dense_ms": 1e3 * lat_d["batch_1"]["median_s"] if "batch_1" in lat_d else None,
        "speedup_b1": speedup("batch_1"),
        "batch": int(big.split("_")[1]) if big else None,
        "latency_big_ms": 1e3 * lat_c[big]["median_s"] if big and big in lat_c else None,
        "latency_big_dense_ms": 1e3 * lat_d[big]["median_s"] if big else None,
        "speedup_big": speedup(big),
        "threads": lat_d[big]["threads"] if big else None,
        "cpu": s.cost.get("machine", {}).get("cpu"),
    }


def main(dirs: list[str]) -> None:
    rows = [row(read_summary(p)) for d in dirs for p in sorted(Path(d).rglob("summary.json"))]
    table = pd.DataFrame(rows).sort_values(["model", "loss", "alpha", "structure"])
    out = Path("experiments/results/efficiency_table.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    cols = ["model", "loss", "alpha", "structure", "lambda_hat", "sparsity_model", "mac_reduction", "bytes_ratio",
            "speedup_b1", "speedup_big", "batch", "iid_coverage"]
    with pd.option_context("display.width", 200):
        print(table[cols].to_string(index=False, float_format="%.3f"))
    print(f"→ {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
