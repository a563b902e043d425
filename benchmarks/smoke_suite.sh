#!/usr/bin/env bash
# The smoke suite whose scores baselines/smoke.json stores: every run CI checks.
# Usage: bash benchmarks/smoke_suite.sh [results-dir]
set -euo pipefail
out="${1:-results}"
run() { xbench run --profile smoke --output-dir "$out" --resume "$@"; }

run --method scratch --task xnli --langs de,zh --seeds 1,2,3
run --method source  --task xnli --langs de,zh --seeds 1,2,3
