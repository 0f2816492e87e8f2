"""The run record: what one run writes besides its artifacts — ``summary.json`` and
``splits.csv`` — and the one way to read them back (aggregation, resume, notebook and tests all
go through :func:`read_summary` / :func:`read_splits`).

:class:`RunSummary` is the typed schema of ``summary.json``; its field order is the file's key
order. The module imports no torch (the Hydra launcher's parent process reads summaries to resume).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .integrity import file_sha256

SUMMARY = "summary.json"
SPLITS = "splits.csv"
SPLIT_COLUMNS = ("split", "lambda_hat", "sparsity_hat", "cal_risk", "test_risk", "violated", "certified")


@dataclass
class GridInfo:
    size: int  # grid points fixed in advance
    evaluated: int  # rows of the loss table (fewer with an early stop)
    min: float
    max: float


@dataclass
class LambdaHat:
    """λ̂ over the validation splits that certified (median, 5% and 95% quantiles; an uncertified
    split has no λ̂) and deployed. Sparsity, which does have a value for "no claim" (0), is
    summarised over all splits instead (:class:`SparsityHat`)."""

    median: float | None
    q05: float | None
    q95: float | None
    deploy: float | None


@dataclass
class SparsityHat:
    median: float | None  # fraction of the pruning pool removed, median over ALL splits (uncertified = 0)
    deploy: float | None  # ... at the deployed λ̂
    deploy_model: float | None  # fraction of the whole model's parameters removed at the deployed λ̂


@dataclass
class Deployment:
    certified: bool
    cal_risk: float | None
    holdout_risk: float | None  # pool points outside the deployment calibration set


@dataclass
class Throughput:
    dense_pool_s: float  # one dense forward pass over the pool
    sweep_s_per_lambda: float
    torch_threads: int


@dataclass
class RunSummary:
    """``summary.json``: the essentials of one run (field order = key order in the file)."""

    config_hash: str
    experiment: str
    model: str
    dataset: str
    synthetic_data: bool
    loss: str
    bound: str
    fwer: str
    criterion: str
    scope: str
    score_inputs: dict[str, Any] | None  # provenance of a data-informed criterion's batch
    seed: int
    alpha: float
    delta: float
    n_cal: int
    n_test: int
    n_splits: int
    pool_size: int
    grid: GridInfo
    lambdas: list[float]  # (G',) evaluated grid points
    pool_risk: list[float]  # (G',) mean loss over the pool at each λ
    dense: dict[str, float]  # dense model's metrics on the pool (accuracy; Dice, IoU)
    dense_risk: float
    model_from_cache: bool
    loss_table_from_cache: bool
    dense_metrics_from_cache: bool
    lambda_hat: LambdaHat
    sparsity_hat: SparsityHat
    deploy: Deployment
    coverage: float | None  # fraction of splits with test risk ≤ α (uncertified: no claim); None without test points
    coverage_ci: list[float] | None  # Clopper–Pearson 95% interval
    iid_coverage: float  # exact check: i.i.d. calibration draws scored against the pool risk
    iid_coverage_ci: list[float]
    test_risk_median: float | None
    violations: int
    certified_fraction: float
    aux_at_deploy: dict[str, float]  # loss side statistics at the deployed λ̂ (e.g. abstention)
    throughput: Throughput
    timing: dict[str, float]  # seconds per stage (<stage>_s), peak memory after it (<stage>_peak_mb, MiB)
    files: dict[str, str]
    output_dir: str
    artifacts: dict[str, str]  # sha256 of every file the run wrote (by path relative to output_dir)
    structure: str = "unstructured"  # unstructured | channel
    # What the models cost (see confprune.cost.COST_CONVENTIONS): "dense" and "deploy" (parameters,
    # macs, nonzero_macs, bytes, latency), "curve" (parameters, macs, nonzero_macs at every evaluated
    # λ), "latency" (measured points: λ, per batch size median/p10/p90 seconds), "machine".
    cost: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSummary:
        nested = {"grid": GridInfo, "lambda_hat": LambdaHat, "sparsity_hat": SparsityHat, "deploy": Deployment,
                  "throughput": Throughput}
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = required - set(d)
        if missing:
            raise ValueError(f"not a confprune summary: missing {sorted(missing)}")
        return cls(**{k: (nested[k](**d[k]) if k in nested else d[k]) for k in names if k in d})


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


def _strict(obj: Any) -> Any:
    """NaN and infinities become null: the files are strict JSON, readable by any parser."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def write_json(obj: Any, path: str | Path) -> None:
    """Atomic, strict JSON write (temp file + rename; NaN → null): a reader never sees a
    half-written file or a bare NaN."""
    from .cache import atomic_write

    text = json.dumps(_strict(json.loads(json.dumps(obj, default=_json_default))), indent=2, allow_nan=False)

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text + "\n")

    atomic_write(path, write)


def artifact_checksums(directory: str | Path, paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of each written file, keyed by its path relative to ``directory``."""
    base = Path(directory)
    return {str(Path(p).relative_to(base)): file_sha256(p) for p in sorted({str(p) for p in paths})}


def damaged_artifacts(directory: str | Path, summary: RunSummary) -> list[str]:
    """Files of a finished run that are missing, no longer match their recorded sha256, or were
    never recorded (a summary whose ``artifacts`` map lacks a file it lists is not trusted)."""
    base = Path(directory).resolve()
    unrecorded = []
    for path in summary.files.values():
        try:
            name = str(Path(path).resolve().relative_to(base))
        except ValueError:
            continue  # a file outside the run directory (none is written there)
        if name not in summary.artifacts:
            unrecorded.append(f"{name} (no recorded checksum)")
    if not summary.artifacts:
        unrecorded.append("(the summary records no artifact checksums)")
    return unrecorded + [name for name, digest in summary.artifacts.items()
                         if not (base / name).is_file() or file_sha256(base / name) != digest]


def write_summary(summary: RunSummary, directory: str | Path) -> Path:
    path = Path(directory) / SUMMARY
    write_json(summary.to_dict(), path)
    return path


def read_summary(path: str | Path) -> RunSummary:
    """A run's summary from ``summary.json`` (or the run directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY
    return RunSummary.from_dict(json.loads(path.read_text()))


def write_splits(path: str | Path, columns: Mapping[str, np.ndarray]) -> None:
    """One row per split: ints and bools as written, floats in full precision, NaN as empty —
    the format pandas' ``to_csv`` writes, without importing pandas in every job."""

    def cell(v: Any) -> Any:
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (float, np.floating)):
            return "" if math.isnan(v) else repr(float(v))
        return int(v)

    from .cache import atomic_write

    names = list(columns)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(names)
            writer.writerows([cell(v) for v in row]
                             for row in zip(*(np.asarray(columns[n]).tolist() for n in names), strict=True))

    atomic_write(path, write)


def read_splits(path: str | Path) -> dict[str, np.ndarray]:
    """``splits.csv`` (or the run directory holding it) as columns: ints, floats (NaN where
    empty) and bools, as written."""
    path = Path(path)
    if path.is_dir():
        path = path / SPLITS
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    cols = {name: [r[i] for r in body] for i, name in enumerate(header)}
    out: dict[str, np.ndarray] = {}
    for name, values in cols.items():
        if name in ("violated", "certified"):
            out[name] = np.asarray([v == "True" for v in values], dtype=bool)
        elif name == "split":
            out[name] = np.asarray([int(v) for v in values], dtype=np.int64)
        else:
            out[name] = np.asarray([float(v) if v != "" else np.nan for v in values], dtype=np.float64)
    return out


__all__ = [
    "SPLITS", "SPLIT_COLUMNS", "SUMMARY", "Deployment", "GridInfo", "LambdaHat", "RunSummary", "SparsityHat",
    "Throughput", "artifact_checksums", "damaged_artifacts", "file_sha256", "read_splits", "read_summary",
    "write_json", "write_splits", "write_summary",
]
