#!/usr/bin/env bash
# Wall time of the default experiment (`make run`): once with an empty model cache (training
# included), once with the model cached. Usage: bash benchmarks/bench_pipeline.sh [overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
cache=$(mktemp -d)
export CONFPRUNE_CACHE_DIR="$cache"
for label in "fresh (trains the model)" "model cached"; do
  start=$(date +%s.%N)
  .venv/bin/python -m confprune.run experiment=mnist sweep.progress=false logger=none "$@" >/dev/null 2>&1
  end=$(date +%s.%N)
  printf '%-26s %6.1f s\n' "$label" "$(echo "$end - $start" | bc)"
done
rm -rf "$cache"
