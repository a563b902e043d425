"""PPA, post-pretraining alignment of a multilingual BERT (docs/methods/ppa.md), and the two baselines built
by the same code: `mlm-control` (the source model, plain MLM on both sides of the same pairs for the same
tokens) and `scratch-ppa` (the same, from a random initialisation of the source's architecture).

One encoder per target language: the alignment stage reads English–<lang> pairs (the
`parallel_en_<lang>` slot under the paper profile, the shared data's en-<lang>-par pool otherwise).
Every encoder records Tatoeba retrieval on the target's retrieval test lines before and after its
training. Code-switched fine-tuning is a protocol (XNLI's `translate-train-codeswitch`), so the
baselines are fine-tuned on the same switched data as PPA (docs/methods/ppa.md, "Code-switched
fine-tuning").
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from xbench import cache
from xbench.errors import XbenchError
from xbench.methods.base import Encoder, Param
from xbench.methods.pairs import SOURCE_LANG, ParallelPairsMethod
from xbench.results.transfer_report import transfer_report

CODE_VERSION = 2  # 2: both query-encoder passes in one module forward (data-parallel safe)


class PpaMethod(ParallelPairsMethod):
    name = "ppa"
    kind = "transfer"
    family = "ppa"
    code_version = CODE_VERSION
    # The question PPA answers is whether its two losses beat plain continued pretraining on the same
    # pairs (docs/methods/baselines.md, "mlm-control"); scratch-ppa is the §10.1 scratch row.
    compared_with = "mlm-control"
    variant = "ppa"
    parameters = {
        # the smoke profile's values (docs/methods/ppa.md, "Defaults"); the paper profile sets its own
        "queue_size": Param(128, low=1), "momentum": Param(0.99, low=0, high=1), "tau": Param(0.05, low=0, low_open=True),
        "tlm_weight": Param(1.0, low=0), "p_shuffle": Param(0.5, low=0, high=1),
        "lr": Param(1e-4, low=0, low_open=True), "batch_size": Param(16, low=1),
        "max_steps": Param(200, low=0, hint="0 = one pass over the pairs"),
        "warmup_steps": Param(20, low=0), "warmup_ratio": Param(0.0, low=0, high=1, high_open=True,
                                                               hint="> 0: that share of the steps, instead of warmup_steps"),
        "weight_decay": Param(0.01, low=0), "max_len": Param(64, low=1), "pretrain_seed": Param(0, low=0),
    }

    def check(self, p: dict[str, Any]) -> list[str]:
        problems = []
        if p["warmup_ratio"] > 0 and p["warmup_steps"] > 0 and "warmup_steps" in self.ctx.params:
            problems.append("give warmup_steps or warmup_ratio, not both")
        if p["queue_size"] < p["batch_size"]:
            problems.append(f"queue_size ({p['queue_size']}) must be at least batch_size ({p['batch_size']}): each step "
                            "enqueues a batch of keys")
        if SOURCE_LANG in self.ctx.langs:
            problems.append(f"method '{self.name}' aligns English with a target language; '{SOURCE_LANG}' cannot be a "
                            "target (--langs)")
        return problems

    def preflight_problems(self) -> list[str]:
        return self.pair_problems()

    # ------------------------------------------------------------------ the plan and its budget

    def plan(self, tokenizer: Any, pairs: list[tuple[str, str]]) -> Any:
        from xbench.stages.ppa import PairPlan

        p = self.params
        en = tokenizer([a for a, _ in pairs], add_special_tokens=False)["input_ids"]
        xx = tokenizer([b for _, b in pairs], add_special_tokens=False)["input_ids"]
        # A side with no subword at all (e.g. only characters the vocabulary lacks, and no [UNK]) has no
        # sentence to align.
        kept = [(a, b) for a, b in zip(en, xx) if a and b]
        return PairPlan(kept, batch_size=p["batch_size"], p_shuffle=p["p_shuffle"], seed=p["pretrain_seed"],
                        cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id, pad_id=tokenizer.pad_token_id,
                        max_len=p["max_len"])

    def steps(self, plan: Any) -> tuple[int, int]:
        """(optimizer steps, warm-up steps) of the alignment stage."""
        p = self.params
        steps = p["max_steps"] or len(plan.batches(0))
        warmup = round(p["warmup_ratio"] * steps) if p["warmup_ratio"] > 0 else p["warmup_steps"]
        return steps, min(warmup, steps)

    def ppa_args(self, steps: int, warmup: int) -> Any:
        from xbench.stages.ppa import PPAArgs

        p = self.params
        return PPAArgs(lr=p["lr"], batch_size=p["batch_size"], max_steps=steps, warmup_steps=warmup,
                       weight_decay=p["weight_decay"], max_len=p["max_len"], queue_size=p["queue_size"],
                       momentum=p["momentum"], tau=p["tau"], tlm_weight=p["tlm_weight"], p_shuffle=p["p_shuffle"],
                       seed=p["pretrain_seed"])

    # ------------------------------------------------------------------ the encoder

    def build_encoder(self, lang: str | None) -> Encoder:
        from xbench.models.source_models import resolve_source_model

        assert lang is not None
        src = resolve_source_model(self.ctx.model, self.ctx.data_dir)
        pairs, manifest = self.parallel(lang)
        if not pairs:
            raise XbenchError(f"method '{self.name}': no English–{lang} sentence pairs (manifest: {manifest})")
        variant = self.variant
        key = self.encoder_key(variant, src, lang, manifest)

        def build(out: Path, work: Path) -> dict[str, Any]:
            from transformers import AutoConfig, AutoTokenizer

            from xbench.loading import load_pretrained
            from xbench.metrics.retrieval import tatoeba_retrieval
            from xbench.stages.lm import has_lm_head, init_model, load_lm, loss_trend, pretrain_mlm
            from xbench.stages.ppa import planned_counts, train_ppa

            t0 = time.perf_counter()
            tokenizer = load_pretrained(AutoTokenizer, src.path)
            config = load_pretrained(AutoConfig, src.path)
            plan = self.plan(tokenizer, pairs)
            steps, warmup = self.steps(plan)
            from accelerate import PartialState

            # Each of N processes trains on its own batch per step: the tokens of a step are N batches'.
            planned = planned_counts(plan, steps, PartialState().num_processes)
            p = self.params
            if variant == "scratch":
                model = init_model(config, "mlm", p["pretrain_seed"])
            else:
                model = load_lm(src.path, "mlm")
            before = tatoeba_retrieval(model, tokenizer, [lang], self.ctx.data_dir)
            extra: dict[str, Any] = {"role": "transfer", "pairs": len(plan.pairs), "lang": lang}
            if variant != "scratch" and not has_lm_head(config):
                extra["lm_head"] = ("fresh: the source checkpoint has no MLM head, so its transform and bias are newly "
                                    "initialised and the decoder is tied to the input embeddings")
            if variant == "ppa":
                fit, parts = train_ppa(model, plan, tokenizer, self.ppa_args(steps, warmup), work / "run",
                                       name=f"PPA en-{lang}")
                # Until the queue has been filled once, its negatives are the random unit vectors it starts
                # with, which a collapsed [CLS] space tells apart from the positive easily: L_sent starts near 0
                # and climbs as real keys arrive. Its trend is read from the first step whose queue holds real
                # keys only (docs/methods/ppa.md, "Reading the losses").
                filled = min(len(parts["sent"]) - 1, -(-p["queue_size"] // p["batch_size"]))
                trends = {"sent": loss_trend(parts["sent"][filled:]), "tlm": loss_trend(parts["tlm"])}
                trends["sent"]["from_step"] = filled + 1
                extra.update(loss_parts=trends, loss_part_values=parts, en_query_share=planned["en_query_share"],
                             key_tokens=planned["key_tokens"])
                for part, trend in trends.items():
                    if not trend["loss_decreased"]:
                        import warnings

                        warnings.warn(f"PPA en-{lang}: L_{part} did not go down (first tenth {trend['loss_start']:.4f}, "
                                      f"last tenth {trend['loss_end']:.4f})", stacklevel=2)
            else:
                # Plain MLM on both sides of the same pairs as separate lines, packed into blocks as long as a
                # TLM pair, until PPA's tokens_seen (query and TLM passes) is reached (docs/methods/baselines.md).
                lines = [a for a, _ in pairs] + [b for _, b in pairs]
                args = {"lr": p["lr"], "batch_size": p["batch_size"], "seq_len": 2 * p["max_len"] + 3,
                        "warmup_steps": warmup, "weight_decay": p["weight_decay"], "max_steps": steps}
                name = f"{'MLM control' if variant == 'control' else 'scratch MLM'} en+{lang} pairs"
                fit = pretrain_mlm(model, tokenizer, lines, args, work / "run", name=name,
                                   max_tokens=planned["tokens_seen"], seed=p["pretrain_seed"])
                extra.update(matched_tokens=planned["tokens_seen"], lines=len(lines))
            fit.record.extra.update(extra)
            after = tatoeba_retrieval(model, tokenizer, [lang], self.ctx.data_dir)
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            return {"stages": [fit.record.to_dict()], "pairs": manifest, "retrieval": after,
                    "retrieval_before": before, "build_seconds": round(time.perf_counter() - t0, 3)}

        path = cache.get_or_build("encoders", key, build)
        manifest_out = cache.read_entry(path)["manifest"]
        return Encoder(key=path.name, path=str(path), stages=manifest_out["stages"],
                       source_stages=src.stages if variant != "scratch" else [],
                       provenance={"variant": variant, "source_model": src.name, "cache_entry": path.name,
                                   "pairs": manifest_out["pairs"], "matches": key.get("matches"),
                                   "retrieval": manifest_out["retrieval"],
                                   "retrieval_before": manifest_out["retrieval_before"]},
                       uses_source_weights=variant != "scratch")

    def extra_report(self, result: dict[str, Any]) -> dict[str, Any]:
        return transfer_report(result)


class MlmControlMethod(PpaMethod):
    """The continued-pretraining control (docs/methods/baselines.md, "mlm-control"): PPA's source model, pairs,
    batch, learning rate and token count, plain MLM instead of the two alignment losses."""

    name = "mlm-control"
    kind = "baseline"
    compared_with = ""
    variant = "control"


class PpaScratchMethod(PpaMethod):
    """Scratch matched to PPA (docs/methods/baselines.md, "scratch-ppa"): the source's architecture and tokenizer
    from a random initialisation, MLM on both sides of the same pairs for PPA's tokens."""

    name = "scratch-ppa"
    kind = "baseline"
    compared_with = ""
    variant = "scratch"
