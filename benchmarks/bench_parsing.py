"""Benchmark of UD parsing with the smoke model: training and parsing sentences/s on English-EWT.

    XBENCH_DATA=../shared/data HF_HUB_OFFLINE=1 python benchmarks/bench_parsing.py --out bench_parsing.json

Uses xbench's tiny-en-bert (built and cached on first use) with the smoke profile's parsing block
(biaffine head 128 / 64, token-budget batches) and measures:
  * featurisation of EWT train, first and cached;
  * training sentences/s and subword tokens/s through the shared runner (AdamW, clipping 1.0);
  * the padding share of token-budget batches against fixed 32-sentence batches of the same data;
  * parsing sentences/s and words/s on EWT test: encoder + biaffine scores + MST decoding, and
    separately the official scorer (system file written and scored).
Timings on a shared 2-core VM vary by 20-50 %: read them as orders of magnitude. Nothing here
asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / padded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    ap.add_argument("--steps", type=int, default=60, help="training steps to time (after 5 warm-up steps)")
    ap.add_argument("--data-dir", default=None, help="data root (default: XBENCH_DATA)")
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    from xbench.models.source_models import resolve_source_model
    from xbench.hfquiet import quiet_transformers
    from xbench.profiles import load_profile
    from xbench.cards import get_task
    from xbench.runner.batching import FeaturePlan, length_grouped_batches
    from xbench.runner.trainer import Runner, TrainArgs
    from xbench.tasktypes.parsing import DependencyParsing

    quiet_transformers()
    settings = load_profile("smoke")["finetune"]["parsing"]
    src = resolve_source_model("xbench/tiny-en-bert", args.data_dir)
    tokenizer = AutoTokenizer.from_pretrained(src.path)
    out: dict[str, Any] = {"model": src.name, "settings": settings, "torch_threads": torch.get_num_threads()}

    with tempfile.TemporaryDirectory(prefix="xbench-bench-parsing-") as tmp:
        os.environ["XBENCH_CACHE"] = str(Path(tmp) / "cache")  # a cold feature cache, so the first pass is timed
        tt = DependencyParsing(get_task("ud"), settings=settings)
        train = tt.load("en", "train", args.data_dir, for_eval=False)
        t = time.perf_counter()
        feats = tt.featurize(train, tokenizer, train=True)
        first = time.perf_counter() - t
        t = time.perf_counter()
        tt.featurize(train, tokenizer, train=True)
        out["featurize_ewt_train_s"] = {"first": round(first, 2), "cached": round(time.perf_counter() - t, 3),
                                        "sentences": len(feats), "skipped_too_long": tt._skipped["en/train"]}

        lengths = [len(f["input_ids"]) for f in feats]
        budget = length_grouped_batches(lengths, seed=1, epoch=0, batch_tokens=int(settings["batch_tokens"]))
        fixed = length_grouped_batches(lengths, seed=1, epoch=0, batch_size=32)
        out["padding_share"] = {"token_budget": round(padding_share(lengths, budget), 4),
                                "fixed_32_sentences": round(padding_share(lengths, fixed), 4),
                                "sentences_per_batch_token_budget": round(len(feats) / len(budget), 1)}

        torch.manual_seed(1)
        model = tt.build_model(src.path)
        plan = FeaturePlan(feats, seed=1, batch_tokens=int(settings["batch_tokens"]),
                           pad_values=tt.pad_values(tokenizer))
        warm = 5
        Runner(TrainArgs(lr=float(settings["lr"]), max_steps=warm, seed=1, progress=False),
               Path(tmp) / "warm").fit(model, plan, tt.loss)
        fit = Runner(TrainArgs(lr=float(settings["lr"]), max_steps=args.steps, seed=1, progress=False),
                     Path(tmp) / "run").fit(model, plan, tt.loss)
        seconds = fit.record.wall_seconds
        trained = sum(len(b) for b in plan.batches(0)[:args.steps])
        out["training"] = {"steps": args.steps, "seconds": round(seconds, 2),
                           "sentences_per_s": round(trained / seconds, 1),
                           "tokens_per_s": round(fit.record.tokens_seen / seconds, 1),
                           "s_per_step": round(seconds / args.steps, 3)}

        test = tt.load("en", "test", args.data_dir, for_eval=True)
        test_feats = tt.featurize(test, tokenizer, train=False)
        n_sent, n_words = len(test.examples), sum(len(s) for s in test.examples)
        t = time.perf_counter()
        preds = tt.predict(model, test, test_feats, tokenizer)
        parse = time.perf_counter() - t
        t = time.perf_counter()
        scores = tt.score(test, preds)
        scoring = time.perf_counter() - t
        out["parsing_ewt_test"] = {"sentences": n_sent, "words": n_words, "parse_s": round(parse, 2),
                                   "sentences_per_s": round(n_sent / parse, 1), "words_per_s": round(n_words / parse, 1),
                                   "score_s": round(scoring, 2),
                                   "sentences_per_s_with_scoring": round(n_sent / (parse + scoring), 1),
                                   "las_after_benchmark_steps": round(scores["las"], 4)}

    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
