"""Regenerate the published numbers and diff them against the committed ones (`make reproduce`).

    python experiments/reproduce.py --quick     # the headline runs (Quick tour's first row, smoke)
    python experiments/reproduce.py             # + every table: experiments/all.sh, then a diff
    python experiments/reproduce.py --only mnist_smoke          # one headline run (the tests use it)
    python experiments/reproduce.py --quick --update            # after an intended change: rewrite

Headline runs: each is a `confprune-run` command whose deterministic numbers (dense metric, λ̂
median and deployed, sparsity, coverages, violations, certified fraction, calibration and
held-out risk, the dense checksum, the draw's seed, MACs and parameters of the certified model)
are committed in `experiments/results/headline.json`; a run must give exactly those values.

Tables: every CSV under `experiments/results/` is snapshotted, regenerated in place by
`experiments/all.sh`, and compared cell by cell (floats to 12 significant digits) on its
deterministic columns. Measured columns (latency, speed-ups, threads, the CPU, run directories)
and the Pareto rows ordered by measured latency change from run to run and are reported, not
compared. Exit code 0 only when every compared number matches.

What is bit-exact (measured on this project's 2-core CPU; README "Reproducing"): training and
every sweep at a fixed `sweep.num_threads`/torch thread count, with the same torch build; the
statistics (NumPy) everywhere. Across thread counts, float reductions in convolutions may round
differently; the model cache key therefore carries the torch version and the training thread
count, so a different setting trains its own model instead of reusing a cached one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
HEADLINE = RESULTS / "headline.json"

#: name → (overrides, in --quick). The first is the README Quick tour's first command.
RUNS: dict[str, tuple[list[str], bool]] = {
    "quick_tour": (["experiment=mnist", "calibration.alpha=0.05", "bound=hb"], True),
    "mnist_smoke": (["experiment=mnist_smoke"], True),
    "mnist": (["experiment=mnist"], False),
    "polyp_smoke": (["experiment=polyp_smoke"], False),
}
#: columns that are measured (or name this machine's directories), never compared
MEASURED = re.compile(r"(latency|speedup|_ms$|^threads$|^cpu$|_dir$|^certified_from$)")


def numbers(run_dir: Path) -> dict[str, Any]:
    """The deterministic numbers of one finished run."""
    s = json.loads((run_dir / "summary.json").read_text())
    c = json.loads((run_dir / "certificate.json").read_text()) if (run_dir / "certificate.json").is_file() else {}
    deploy = (c.get("cost") or {}).get("deploy") or {}
    return {
        "dense": s["dense"],
        "lambda_hat": {k: s["lambda_hat"][k] for k in ("median", "q05", "q95", "deploy")},
        "sparsity_hat": s["sparsity_hat"],
        "coverage": s["coverage"], "coverage_ci": s["coverage_ci"],
        "iid_coverage": s["iid_coverage"], "iid_coverage_ci": s["iid_coverage_ci"],
        "violations": s["violations"], "certified_fraction": s["certified_fraction"],
        "deploy": s["deploy"],
        "dense_checksum": (c.get("model") or {}).get("dense_checksum"),
        "draw_seed": (c.get("calibration") or {}).get("seed"),
        "certified_macs": deploy.get("nonzero_macs"), "certified_parameters": deploy.get("parameters"),
    }


def run_headline(name: str, workdir: Path) -> dict[str, Any]:
    overrides, _ = RUNS[name]
    out = workdir / name
    cmd = [sys.executable, "-m", "confprune.run", *overrides, "logger=none", f"hydra.run.dir={out}"]
    print("$", " ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode != 0:
        raise SystemExit(f"reproduce: {name} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return numbers(out)


def diff_values(want: Any, got: Any, where: str) -> list[str]:
    """Exact comparison of nested JSON values (floats as recorded: a JSON round trip is exact)."""
    if isinstance(want, dict) and isinstance(got, dict):
        return [d for k in sorted(set(want) | set(got)) for d in diff_values(want.get(k), got.get(k), f"{where}.{k}")]
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [d for i, (a, b) in enumerate(zip(want, got, strict=True)) for d in diff_values(a, b, f"{where}[{i}]")]
    return [] if want == got else [f"{where}: committed {want!r}, regenerated {got!r}"]


def _same_cell(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-12, abs_tol=0.0)


def diff_csv(committed: Path, regenerated: Path) -> tuple[list[str], int, list[str]]:
    """(differences, cells compared, measured columns skipped) between two versions of a table."""
    import csv

    with open(committed, newline="") as f:
        old = list(csv.DictReader(f))
    with open(regenerated, newline="") as f:
        new = list(csv.DictReader(f))
    cols = list(old[0]) if old else []
    skipped = [c for c in cols if MEASURED.search(c)]
    if regenerated.name == "pareto_mnist.csv":  # the latency objective orders the front by a measurement
        old = [r for r in old if r.get("objective") != "latency"]
        new = [r for r in new if r.get("objective") != "latency"]
    if len(old) != len(new) or (new and list(new[0]) != cols):
        return [f"{committed.name}: {len(old)} rows × {cols} committed, {len(new)} rows × "
                f"{list(new[0]) if new else []} regenerated"], 0, skipped
    out, n = [], 0
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        for c in cols:
            if c in skipped:
                continue
            n += 1
            if not _same_cell(a[c], b[c]):
                out.append(f"{committed.name} row {i} {c}: committed {a[c]!r}, regenerated {b[c]!r}")
    return out, n, skipped


def check_tables() -> list[str]:
    """Snapshot the committed tables, regenerate everything (experiments/all.sh), diff."""
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp)
        tables = sorted(RESULTS.glob("*.csv"))
        for t in tables:
            shutil.copy2(t, snap / t.name)
        print("$ bash experiments/all.sh   (every table, in place; hours the first time, minutes from the caches)",
              flush=True)
        subprocess.run(["bash", "experiments/all.sh"], cwd=REPO, check=True,
                       env={**os.environ, "PY": sys.executable})
        problems = []
        for t in tables:
            diffs, n, skipped = diff_csv(snap / t.name, t)
            print(f"{t.name}: {n} cells compared, {len(diffs)} differ; measured, not compared: "
                  f"{', '.join(skipped) or '-'}")
            problems += diffs
        print("the regenerated tables are now in experiments/results (their measured columns differ from the "
              "committed ones); `git checkout -- experiments/results` restores the committed files")
        return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the headline runs marked quick")
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS), help="only these headline runs, no tables")
    parser.add_argument("--update", action="store_true",
                        help="write the regenerated headline numbers to experiments/results/headline.json")
    args = parser.parse_args(argv)
    names = args.only or [n for n, (_, quick) in RUNS.items() if quick or not args.quick]
    committed = json.loads(HEADLINE.read_text()) if HEADLINE.is_file() else {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="confprune-reproduce-") as tmp:
        got = {name: run_headline(name, Path(tmp)) for name in names}
    for name, values in got.items():
        if name not in committed:
            problems.append(f"{name}: no committed numbers in {HEADLINE.relative_to(REPO)}")
            continue
        diffs = diff_values(committed[name], values, name)
        print(f"{name}: {'identical' if not diffs else f'{len(diffs)} numbers differ'}")
        problems += diffs
    if args.update:
        HEADLINE.write_text(json.dumps({**committed, **got}, indent=1, sort_keys=True) + "\n")
        print(f"wrote {HEADLINE.relative_to(REPO)}")
        return 0
    if not args.quick and not args.only:
        problems += check_tables()
    for p in problems:
        print("DIFFERS", p)
    print("reproduce:", "every number matches" if not problems else f"{len(problems)} numbers differ")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
