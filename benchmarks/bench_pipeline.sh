#!/usr/bin/env bash
# Wall time of one experiment run (default experiment=mnist, i.e. `make run`), three ways:
# an empty cache (data prepared, model trained, network swept), the model cached but not the loss
# table, and everything cached. Usage: bash benchmarks/bench_pipeline.sh [experiment] [overrides…]
set -euo pipefail
cd "$(dirname "$0")/.."
exp=${1:-mnist}; shift || true
cache=$(mktemp -d)
export CONFPRUNE_CACHE_DIR="$cache"
run() {
  local s e; s=$(date +%s.%N)
  .venv/bin/python -m confprune.run "experiment=$exp" sweep.progress=false logger=none "$@" >/dev/null 2>&1
  e=$(date +%s.%N); echo "$e - $s" | bc
}
t1=$(run "$@"); rm -rf "$cache/loss_tables"
t2=$(run "$@"); t3=$(run "$@")
printf '%s: fresh cache %6.1f s | model cached %6.1f s | model and loss table cached %6.1f s\n' "$exp" "$t1" "$t2" "$t3"
rm -rf "$cache"
