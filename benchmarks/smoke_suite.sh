#!/usr/bin/env bash
# The smoke suite whose scores baselines/smoke.json stores: every run CI checks.
# Usage: bash benchmarks/smoke_suite.sh [results-dir]
# XNLI runs every method and its matched baseline over 3 seeds (the findings are mean ± std);
# the QA, parsing and NER cards run the source model with the profile's seed.
# Two lanes run side by side, one thread each: the tiny models gain little from a second thread, and two
# processes keep both cores busy (measured in CI: 22 min in one lane of two threads). Runs that need the
# same cache entry wait for each other on the cache's lock; baselines/smoke.json is made in this setup.
set -euo pipefail
out="${1:-results}"
export OMP_NUM_THREADS=1
run() { xbench run --profile smoke --output-dir "$out" --resume "$@"; }

lane_a() {
  for method in source scratch clp scratch-clp meta meta-single; do
    run --method "$method" --task xnli --langs de,zh --seeds 1,2,3
  done
  run --method source --task mlqa   --langs de,zh,ar
  run --method source --task mlqa   --langs de,zh --question-langs en,de
  run --method source --task xquad  --langs de,zh,ru
  run --method source --task tydiqa --langs ko,sw
  run --method source --task ud     --langs de,zh
  run --method source --task panx   --langs de,zh
  run --method clp    --task ud     --langs de --protocol in-language-lowres
}

lane_b() {
  # TreLM's own use case, little target data (docs/methods/trelm.md, "The smoke run"), beside its matched baseline
  for method in trelm scratch-trelm; do
    run --method "$method" --task xnli --langs de --protocol in-language --seeds 1,2,3
    run --method "$method" --task ud   --langs de --protocol in-language-lowres
  done
  # PPA on the multilingual tiny model (docs/methods/ppa.md, "Findings"), zero-shot and with code-switched
  # target training data, beside its continued-MLM control; MLQA de once
  for method in ppa mlm-control; do
    run --method "$method" --task xnli --langs de --seeds 1,2,3
    run --method "$method" --task xnli --langs de --protocol translate-train-codeswitch --seeds 1,2,3
  done
  run --method ppa --task mlqa --langs de
  # CLISM+CACR on the multilingual tiny XLM-R (docs/methods/clism.md, "Findings"), beside its continued-MLM
  # control: MLQA de (one fine-tuning per seed, which the G-XLT cell and XQuAD de reuse) and few-shot 64
  for method in clism clism-mlm-control; do
    run --method "$method" --task mlqa  --langs de --seeds 1,2
    run --method "$method" --task mlqa  --langs de --question-langs en,de --seeds 1,2
    run --method "$method" --task xquad --langs de --seeds 1,2
  done
  run --method clism --task mlqa --langs de --option few_shot=64 --seeds 1
}

lane_a > "$out.lane-a.log" 2>&1 & a=$!
lane_b > "$out.lane-b.log" 2>&1 & b=$!
status=0
wait $a || { echo "smoke suite lane A failed:"; tail -40 "$out.lane-a.log"; status=1; }
wait $b || { echo "smoke suite lane B failed:"; tail -40 "$out.lane-b.log"; status=1; }
grep -h "^wrote" "$out.lane-a.log" "$out.lane-b.log" | sort || true
exit $status
