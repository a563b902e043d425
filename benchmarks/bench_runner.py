"""Benchmark of the shared runner on XNLI fine-tuning, measured in one run on this machine.

    XBENCH_DATA=../shared/data HF_HUB_OFFLINE=1 python benchmarks/bench_runner.py --out bench.json

Measures, on the same model, data and hyper-parameters (batch 32, lr 1e-4, AdamW, clipping 1.0):
  * training tokens/s of the xbench runner (length-grouped batches by count and by token budget)
    against the HF Trainer at its best (dynamic padding, train_sampling_strategy="group_by_length",
    model.accepts_loss_kwargs=False) and against the HF example-script default (pad to 128);
  * achieved training FLOP/s (6 x non-embedding params x tokens/s) as a share of the fp32 matmul
    peak measured in the same run;
  * the padding share of processed tokens;
  * the speed-up of the cached second data preparation;
  * the start time of `xbench --help` and `xbench list`.
Timings on a shared 2-core VM vary by 20-50 %: read them as orders of magnitude. Nothing here
asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def cli_start(args: list[str], reps: int = 5) -> float:
    exe = [sys.executable, "-m", "xbench", *args]
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run(exe, capture_output=True, check=True, cwd=REPO)
        times.append(time.perf_counter() - t)
    return min(times)


def small_bert(vocab: int, kind: str):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    shapes = {"tiny": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128),
              "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)}
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=vocab, num_labels=3, **shapes[kind]))


def run_xbench(feats, model, steps: int, *, batch_size=None, batch_tokens=None) -> dict:
    from xbench.runner.batching import FeaturePlan
    from xbench.runner.compute import parameter_counts
    from xbench.runner.trainer import Runner, TrainArgs

    plan = FeaturePlan(feats, seed=1, batch_size=batch_size, batch_tokens=batch_tokens, pad_values={"input_ids": 0})
    padded = real = 0
    for b in plan.batches(0)[:steps]:
        lens = [len(feats[i]["input_ids"]) for i in b]
        padded += max(lens) * len(lens)
        real += sum(lens)

    def loss(m, batch, ctx):
        import torch

        labels = batch.pop("labels")
        return {"ce": torch.nn.functional.cross_entropy(m(**batch).logits, labels)}

    with tempfile.TemporaryDirectory() as work:
        t = time.perf_counter()
        fit = Runner(TrainArgs(lr=1e-4, max_steps=steps, weight_decay=0.01, seed=1, progress=False), work).fit(model, plan, loss)
        wall = time.perf_counter() - t
    return {"tokens_per_s": fit.record.tokens_seen / wall, "wall_s": wall, "tokens": fit.record.tokens_seen,
            "padding_share": 1 - real / padded, "non_embedding": parameter_counts(model)["non_embedding"]}


def run_trainer(feats, model, tokenizer, steps: int, *, pad_to_max: bool) -> dict:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    model.accepts_loss_kwargs = False  # transformers 5.23 mis-scales BERT classification losses otherwise
    base = DataCollatorWithPadding(tokenizer, padding="max_length" if pad_to_max else "longest", max_length=128)
    seen = {"real": 0, "padded": 0}

    def collate(batch):
        out = base(batch)
        seen["real"] += int(out["attention_mask"].sum())
        seen["padded"] += int(out["attention_mask"].numel())
        return out

    with tempfile.TemporaryDirectory() as work:
        args = TrainingArguments(output_dir=work, per_device_train_batch_size=32, max_steps=steps, learning_rate=1e-4,
                                 weight_decay=0.01, max_grad_norm=1.0, logging_strategy="no", save_strategy="no",
                                 report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=1,
                                 train_sampling_strategy="random" if pad_to_max else "group_by_length")
        trainer = Trainer(model=model, args=args, train_dataset=feats, data_collator=collate)
        t = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t
    return {"tokens_per_s": seen["real"] / wall, "wall_s": wall, "tokens": seen["real"],
            "padding_share": 1 - seen["real"] / seen["padded"]}


def cache_speedup(data_dir: str) -> dict:
    from transformers import AutoTokenizer

    from xbench.models.source_models import resolve_source_model
    from xbench.cards import get_task

    src = resolve_source_model("xbench/tiny-en-bert", data_dir)
    tok = AutoTokenizer.from_pretrained(src.path)
    tt = get_task("xnli").task_type_impl()
    with tempfile.TemporaryDirectory() as cache:
        old = os.environ.get("XBENCH_CACHE")
        os.environ["XBENCH_CACHE"] = cache
        try:
            times = []
            for _ in range(2):
                t = time.perf_counter()
                for lang in ("de", "zh"):
                    split = tt.load(lang, "test", data_dir, for_eval=True)
                    tt.featurize(split, tok, train=False)
                times.append(time.perf_counter() - t)
            # The load (TSV read + checks) is paid both times; isolate the featurisation as well.
            split = tt.load("de", "test", data_dir, for_eval=True)
            t = time.perf_counter()
            tt.featurize(split, tok, train=False)
            cached_feat = time.perf_counter() - t
            enc_t = time.perf_counter()
            tok([e.premise for e in split.examples], [e.hypothesis for e in split.examples], truncation=True, max_length=128)
            cold_feat = time.perf_counter() - enc_t
        finally:
            if old is None:
                os.environ.pop("XBENCH_CACHE")
            else:
                os.environ["XBENCH_CACHE"] = old
    return {"first_s": times[0], "second_s": times[1], "speedup_with_load": times[0] / times[1],
            "tokenise_s": cold_feat, "cached_features_s": cached_feat, "speedup_featurisation": cold_feat / cached_feat}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("XBENCH_DATA", "../shared/data"))
    ap.add_argument("--steps-tiny", type=int, default=60)
    ap.add_argument("--steps-small", type=int, default=20)
    ap.add_argument("--out", default=None)
    ap.add_argument("--only-cache", action="store_true",
                    help="measure only the cached second data preparation (skips the training comparison)")
    a = ap.parse_args()

    import torch
    from transformers import AutoTokenizer
    import transformers

    transformers.logging.set_verbosity_error()
    from xbench.models.source_models import resolve_source_model
    from xbench.cards import get_task

    report: dict = {"device": f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}"}
    if not a.only_cache:
        report["cli_start_s"] = {"--help": cli_start(["--help"]), "list": cli_start(["list"])}
    report["cache"] = cache_speedup(a.data_dir)
    if a.only_cache:
        print(json.dumps(report, indent=2))
        if a.out:
            Path(a.out).write_text(json.dumps(report, indent=2))
        return
    src = resolve_source_model("xbench/tiny-en-bert", a.data_dir)
    tok = AutoTokenizer.from_pretrained(src.path)
    tt = get_task("xnli").task_type_impl()
    feats = list(tt.featurize(tt.load("en", "dev-train", a.data_dir, for_eval=False), tok, train=True))
    mean_len = statistics.fmean(len(f["input_ids"]) for f in feats)
    report["mean_length"] = mean_len
    report["matmul_peak_flops"] = matmul_peak()
    for kind, steps in (("tiny", a.steps_tiny), ("small", a.steps_small)):
        rows = {
            "xbench_batch32": run_xbench(feats, small_bert(len(tok), kind), steps, batch_size=32),
            "xbench_token_budget": run_xbench(feats, small_bert(len(tok), kind), steps, batch_tokens=int(32 * mean_len)),
            "trainer_best": run_trainer(feats, small_bert(len(tok), kind), tok, steps, pad_to_max=False),
            "trainer_pad_to_max": run_trainer(feats, small_bert(len(tok), kind), tok, steps, pad_to_max=True),
        }
        n = rows["xbench_batch32"]["non_embedding"]
        best = max(rows["xbench_batch32"]["tokens_per_s"], rows["xbench_token_budget"]["tokens_per_s"])
        rows["summary"] = {
            "runner_vs_trainer_best": best / rows["trainer_best"]["tokens_per_s"],
            "runner_vs_pad_to_max": best / rows["trainer_pad_to_max"]["tokens_per_s"],
            "achieved_flops": 6 * n * best,
            "share_of_matmul_peak": 6 * n * best / report["matmul_peak_flops"],
        }
        report[kind] = rows
    print(json.dumps(report, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
