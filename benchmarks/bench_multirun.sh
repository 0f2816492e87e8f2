#!/usr/bin/env bash
# A 12-job MNIST sweep (alpha × bound × seed) with cached models, loss tables and dense metrics:
#   1. warm the caches (trains the seed-1 model and sweeps once per seed; not timed),
#   2. basic launcher vs joblib with 2 workers (hydra/launcher=local_parallel), in three variants:
#        default  - as a user runs it: figures and offline wandb on (~1.3 s of work per job)
#        lean     - logger=none figures=false (~0.4 s of work per job)
#        coverage - default plus calibration.n_splits=10000 (a tighter coverage estimate)
#      wall time of the whole command, the ratio, and the mean/max job time inside the process;
#   3. kill the sweep midway, re-run it with the same sweep dir: finished jobs are skipped (not
#      recomputed, files untouched) and the results equal an uninterrupted run.
# Usage: bash benchmarks/bench_multirun.sh [experiment]   (default mnist; mnist_smoke is quick)
set -euo pipefail
cd "$(dirname "$0")/.."
exp=${1:-mnist}
PY=.venv/bin/python
base=$(mktemp -d)
trap 'rm -rf "$base"' EXIT
axes=(calibration.alpha=0.01,0.03,0.05 bound=binomial,hb seed=0,1)
common=(-m "experiment=$exp" sweep.progress=false)
"$PY" -m confprune.run "${common[@]}" "${axes[@]}" logger=none figures=false "hydra.sweep.dir=$base/warm" >/dev/null 2>&1

timed() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
reps=${REPS:-3}  # basic and joblib alternate, each variant $reps times (median); coverage once
jobs_inside() {
  "$PY" - "$1" <<'PYEOF'
import json, sys, pathlib
t = [json.loads(p.read_text())["timing"]["total_s"] for p in pathlib.Path(sys.argv[1]).glob("*/summary.json")]
print(f"{sum(t) / len(t):.2f} s mean, {max(t):.2f} s max ({len(t)} jobs)")
PYEOF
}
printf '%-9s %8s %8s %7s   %s\n' variant basic joblib ratio "job time inside the process (basic launcher); medians of $reps runs"
for variant in default lean coverage; do
  case $variant in
    default) extra=() ;;
    lean) extra=(logger=none figures=false) ;;
    coverage) extra=(calibration.n_splits=10000) ;;
  esac
  tb=(); tj=(); n=$reps; [ "$variant" = coverage ] && n=1
  for ((r = 0; r < n; r++)); do
    rm -rf "$base/$variant-basic" "$base/$variant-joblib"
    tb+=("$(timed "$PY" -m confprune.run "${common[@]}" "${axes[@]}" "${extra[@]}" "hydra.sweep.dir=$base/$variant-basic")")
    tj+=("$(timed "$PY" -m confprune.run "${common[@]}" "${axes[@]}" "${extra[@]}" hydra/launcher=local_parallel "hydra.sweep.dir=$base/$variant-joblib")")
  done
  t_basic=$(median "${tb[@]}"); t_joblib=$(median "${tj[@]}")
  printf '%-9s %7.1fs %7.1fs  x%.2f   %s\n' "$variant" "$t_basic" "$t_joblib" "$(echo "$t_basic / $t_joblib" | bc -l)" "$(jobs_inside "$base/$variant-basic")"
done

# Kill midway, then resume.
lean=(logger=none figures=false)
"$PY" -m confprune.run "${common[@]}" "${axes[@]}" "${lean[@]}" "hydra.sweep.dir=$base/killed" >/dev/null 2>&1 &
pid=$!
while [ "$(ls "$base"/killed/*/summary.json 2>/dev/null | wc -l)" -lt 5 ]; do sleep 0.1; done
kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
done_before=$(ls "$base"/killed/*/summary.json | wc -l)
stamps=$(stat -c '%n %Y' "$base"/killed/*/summary.json | sort)
"$PY" -m confprune.run "${common[@]}" "${axes[@]}" "${lean[@]}" "hydra.sweep.dir=$base/killed" >/dev/null 2>&1
same=$(diff <(echo "$stamps") <(stat -c '%n %Y' $(echo "$stamps" | cut -d' ' -f1) | sort) >/dev/null && echo yes || echo NO)
"$PY" - "$base/lean-basic" "$base/killed" "$done_before" "$same" <<'PYEOF'
import json, sys, pathlib
keys = ("lambda_hat", "sparsity_hat", "coverage", "iid_coverage", "violations")
a, b = (sorted((p.parent.name, {k: json.loads(p.read_text())[k] for k in keys}) for p in pathlib.Path(d).glob("*/summary.json")) for d in sys.argv[1:3])
print(f"killed after {sys.argv[3]} finished jobs; finished jobs untouched on resume: {sys.argv[4]}; "
      f"results identical to the uninterrupted sweep: {'yes' if a == b else 'NO'} ({len(b)} jobs)")
PYEOF
