"""Baseline `scratch`: the compared model's architecture and tokenizer, random init, MLM on
target-language text for a token budget (docs/methods/baselines.md), then the shared fine-tuning.

The budget defaults to the profile's fixed one; to match a transfer method's run, pass
--param budget_tokens=<that run's transfer tokens_seen>.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from xbench import cache
from xbench.models.source_models import resolve_source_model
from xbench.methods.base import Encoder, Method, Param
from xbench.results.transductive import pool_entries

CODE_VERSION = 1


class ScratchMethod(Method):
    name = "scratch"
    kind = "baseline"
    scope = "per-language"
    parameters = {"budget_tokens": Param(0, low=0, hint="0 = the profile's pretraining budget"),
                  "pretrain_seed": Param(0, low=0),
                  # the key of the run whose tokens the budget matches: recorded in the cache key only
                  "matches": Param("")}

    def pretrain_args(self) -> dict[str, Any]:
        return dict(self.ctx.profile["pretrain"]["mlm"])

    def budget(self) -> int:
        if self.params["budget_tokens"]:
            return int(self.params["budget_tokens"])
        a = self.pretrain_args()
        return int(a.get("max_tokens") or a["max_steps"] * a["batch_size"] * a["seq_len"])

    def pretraining_languages(self) -> list[str]:
        return list(self.ctx.langs)

    def build_encoder(self, lang: str | None) -> Encoder:
        from xbench.data.pools import build_pool

        assert lang is not None
        src = resolve_source_model(self.ctx.model, self.ctx.data_dir)
        pool = build_pool(lang, self.ctx.data_dir)
        args = self.pretrain_args()
        budget = self.budget()
        key = {"method": self.name, "code_version": CODE_VERSION, "architecture_of": src.name,
               "source_weights": src.weights_sha256, "lang": lang, "pretrain": args, "budget_tokens": budget,
               "seed": self.params["pretrain_seed"], "pool": pool.manifest(), "matches": self.params["matches"],
               "profile": self.ctx.profile["name"]}

        def build(out: Path, work: Path) -> dict[str, Any]:
            import torch
            from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

            from xbench.loading import load_pretrained
            from xbench.stages.lm import pretrain_mlm

            tokenizer = load_pretrained(AutoTokenizer, src.path)
            config = load_pretrained(AutoConfig, src.path)
            torch.manual_seed(self.params["pretrain_seed"])
            model = AutoModelForMaskedLM.from_config(config)  # random init, same architecture
            fit = pretrain_mlm(model, tokenizer, pool.lines, args, work / "run", name=f"scratch MLM {lang}",
                               resume=True, max_tokens=budget, seed=self.params["pretrain_seed"])
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            return {"stages": [fit.record.to_dict()], "pool": pool.manifest(), "budget_tokens": budget}

        path = cache.get_or_build("encoders", key, build)
        manifest = cache.read_entry(path)["manifest"]
        return Encoder(key=path.name, path=str(path), stages=manifest["stages"],
                       provenance={"architecture_of": src.name, "pool": manifest["pool"],
                                   "budget_tokens": manifest["budget_tokens"], "cache_entry": path.name},
                       flags={"transductive": pool_entries(manifest["pool"])}, uses_source_weights=False)
