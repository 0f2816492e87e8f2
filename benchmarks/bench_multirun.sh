#!/usr/bin/env bash
# A 12-job MNIST sweep (alpha × bound × seed) with cached models and loss tables:
#   1. warm the caches (trains the seed-1 model and sweeps once per seed; not timed),
#   2. basic launcher vs joblib with 2 workers (one torch thread each): wall time and ratio,
#   3. kill the joblib sweep midway, re-run it with the same sweep dir: finished jobs are
#      skipped (not recomputed, files untouched) and the results equal an uninterrupted run.
# Usage: bash benchmarks/bench_multirun.sh [experiment]   (default mnist; mnist_smoke is quick)
set -euo pipefail
cd "$(dirname "$0")/.."
exp=${1:-mnist}
PY=.venv/bin/python
base=$(mktemp -d)
axes=(calibration.alpha=0.01,0.03,0.05 bound=binomial,hb seed=0,1)
common=(-m "experiment=$exp" logger=none figures=false sweep.progress=false)
"$PY" -m confprune.run "${common[@]}" "${axes[@]}" "hydra.sweep.dir=$base/warm" >/dev/null 2>&1

timed() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
t_basic=$(timed "$PY" -m confprune.run "${common[@]}" "${axes[@]}" sweep.num_threads=2 "hydra.sweep.dir=$base/basic")
t_joblib=$(timed "$PY" -m confprune.run "${common[@]}" "${axes[@]}" sweep.num_threads=1 hydra/launcher=local_parallel "hydra.sweep.dir=$base/joblib")
printf 'basic launcher   %6.1f s\njoblib, 2 workers %6.1f s\nspeed-up          x%.2f\n' "$t_basic" "$t_joblib" "$(echo "$t_basic / $t_joblib" | bc -l)"
"$PY" - "$base/basic" <<'PYEOF'
import json, sys, pathlib
t = [json.loads(p.read_text())["timing"]["total_s"] for p in pathlib.Path(sys.argv[1]).glob("*/summary.json")]
print(f"per job (inside the process): max {max(t):.1f} s, mean {sum(t)/len(t):.1f} s over {len(t)} jobs")
PYEOF

# Kill midway, then resume.
"$PY" -m confprune.run "${common[@]}" "${axes[@]}" sweep.num_threads=2 "hydra.sweep.dir=$base/killed" >/dev/null 2>&1 &
pid=$!
while [ "$(ls "$base"/killed/*/summary.json 2>/dev/null | wc -l)" -lt 5 ]; do sleep 0.5; done
kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
done_before=$(ls "$base"/killed/*/summary.json | wc -l)
stamps=$(stat -c '%n %Y' "$base"/killed/*/summary.json | sort)
"$PY" -m confprune.run "${common[@]}" "${axes[@]}" sweep.num_threads=2 "hydra.sweep.dir=$base/killed" >/dev/null 2>&1
same=$(diff <(echo "$stamps") <(stat -c '%n %Y' $(echo "$stamps" | cut -d' ' -f1) | sort) >/dev/null && echo yes || echo NO)
"$PY" - "$base/basic" "$base/killed" "$done_before" "$same" <<'PYEOF'
import json, sys, pathlib
keys = ("lambda_hat", "sparsity_hat", "coverage", "iid_coverage", "violations")
a, b = (sorted((p.parent.name, {k: json.loads(p.read_text())[k] for k in keys}) for p in pathlib.Path(d).glob("*/summary.json")) for d in sys.argv[1:3])
print(f"killed after {sys.argv[3]} finished jobs; finished jobs untouched on resume: {sys.argv[4]}; "
      f"results identical to the uninterrupted sweep: {'yes' if a == b else 'NO'} ({len(b)} jobs)")
PYEOF
rm -rf "$base"
