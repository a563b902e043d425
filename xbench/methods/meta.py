"""Cross-lingual language model meta-pretraining (docs/methods/meta.md; an xbench reconstruction: no public code)
and its single-phase baseline, built by the same code.

One shared WordPiece vocabulary is trained on every pool the run uses (English and the targets)
before anything else (docs/methods/meta.md, "Stages"). `meta`: phase 1 is MLM on the English pool alone (the
meta-pretraining phase), phase 2 starts from the exact phase-1 weights with a fresh optimizer and
a restarted schedule and runs MLM on English ∪ targets with one α-smoothed language per batch.
`meta-single`: the same architecture, tokenizer, batch, sampler and seeds, phase 2 only, for the
total number of steps. Both are scoped to the run's target set: one encoder serves every target
language of the run. Each encoder records Tatoeba retrieval accuracy on the retrieval test lines
(docs/data.md, "Fixed splits"), and `extra_report` turns a result into the three quantities of
docs/methods/meta.md, "Transfer report".
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from xbench import cache
from xbench.errors import XbenchError
from xbench.methods.base import Encoder, Method, Param
from xbench.results.transductive import pool_entries
from xbench.results.transfer_report import transfer_report

CODE_VERSION = 2  # 2: stage records carry the loss trend
SOURCE_LANG = "en"


class MetaMethod(Method):
    name = "meta"
    kind = "transfer"
    scope = "shared"
    compared_with = "meta-single"
    variant = "meta"
    uses_model = False  # its own tokenizer and architecture (the params), trained from scratch
    parameters = {
        # the smoke profile's values (docs/methods/meta.md, "Defaults")
        "total_steps": Param(600, low=1), "phase1_share": Param(0.5, low=0, high=1, high_open=True,
                                                               hint="phase 2 needs steps"),
        "phase1_lang": Param(SOURCE_LANG), "alpha": Param(0.5, low=0), "vocab_size": Param(4000, low=1),
        # distinct characters kept in the shared vocabulary (0: all); the rest are [UNK]
        "limit_alphabet": Param(1000, low=0),
        "layers": Param(2, low=1), "hidden": Param(64, low=1), "heads": Param(2, low=1), "ffn": Param(128, low=1),
        "max_positions": Param(512, low=1),
        "lr": Param(5e-4, low=0, low_open=True), "warmup_steps": Param(30, low=0), "weight_decay": Param(0.01, low=0),
        "batch_size": Param(16, low=1), "seq_len": Param(64, low=8), "pretrain_seed": Param(0, low=0),
    }

    def check(self, p: dict[str, Any]) -> list[str]:
        # Under the paper profile the pools come from the mono_<lang> slots (data_slots), which the run's
        # pre-flight checks (docs/protocols.md, "Data slots").
        problems: list[str] = []
        if p["heads"] >= 1 and p["hidden"] % p["heads"]:
            problems.append(f"hidden ({p['hidden']}) must be a multiple of heads ({p['heads']})")
        if p["phase1_lang"] not in self.languages():
            problems.append(f"phase1_lang '{p['phase1_lang']}' is neither the source language nor a target of the run "
                            f"({', '.join(self.languages())})")
        return problems

    def pretraining_languages(self) -> list[str]:
        return self.languages()

    def data_slots(self) -> list[str]:
        """The slots a profile that reads slots (the paper profile) fills the pools from: mono_en and the targets'."""
        return [f"mono_{lang}" for lang in self.languages()]

    def languages(self) -> list[str]:
        """English first, then the run's targets: the phase-2 corpus and the tokenizer's."""
        return [SOURCE_LANG, *sorted(set(self.ctx.langs) - {SOURCE_LANG})]

    def steps(self) -> tuple[int, int]:
        """(N1, N2): phase-1 and phase-2 optimizer steps; the single phase runs N1 + N2."""
        total = self.params["total_steps"]
        n1 = round(total * self.params["phase1_share"])
        return n1, total - n1

    def lm_args(self, steps: int, seed: int) -> Any:
        from xbench.stages.lm import LMArgs

        p = self.params
        return LMArgs(lr=p["lr"], batch_size=p["batch_size"], seq_len=p["seq_len"], max_steps=steps,
                      warmup_steps=p["warmup_steps"], weight_decay=p["weight_decay"], seed=seed)

    def arch(self) -> dict[str, int]:
        p = self.params
        return {k: p[k] for k in ("layers", "hidden", "heads", "ffn", "max_positions")}

    def config(self, tokenizer: Any) -> Any:
        from transformers import BertConfig

        a = self.arch()
        return BertConfig(vocab_size=len(tokenizer), num_hidden_layers=a["layers"], hidden_size=a["hidden"],
                          num_attention_heads=a["heads"], intermediate_size=a["ffn"],
                          max_position_embeddings=a["max_positions"], pad_token_id=tokenizer.pad_token_id,
                          architectures=["BertForMaskedLM"])

    # ------------------------------------------------------------------ stages

    def pools(self) -> dict[str, Any]:
        from xbench.data.slots import method_pool

        return {lang: method_pool(lang, self.ctx.data_dir, self.ctx.slots) for lang in self.languages()}

    def _tokenizer(self, pools: dict[str, Any]) -> Path:
        """Stage 1 (docs/methods/meta.md, "Stages"): one WordPiece vocabulary over every pool, before phase 1
        (shared by both variants)."""
        key = {"stage": "meta-tokenizer", "code_version": CODE_VERSION, "vocab_size": self.params["vocab_size"],
               "limit_alphabet": self.params["limit_alphabet"],
               "pools": [pools[lang].manifest() for lang in pools]}

        def build(out: Path, work: Path) -> dict[str, Any]:
            from xbench.vocab.wordpiece import train_wordpiece, vocabulary_stats
            from xbench.runner.compute import StageRecord

            t0 = time.perf_counter()
            tokenizer = train_wordpiece([x for lang in pools for x in pools[lang].lines], self.params["vocab_size"],
                                        limit_alphabet=self.params["limit_alphabet"])
            tokenizer.save_pretrained(out)
            return {"stages": [StageRecord(name="meta shared tokenizer", kind="auxiliary",
                                           wall_seconds=round(time.perf_counter() - t0, 3),
                                           extra={"role": "tokenizer", **vocabulary_stats(tokenizer),
                                                  "limit_alphabet": self.params["limit_alphabet"],
                                                  "languages": list(pools)}).to_dict()]}

        return cache.get_or_build("stages", key, build)

    def _phase1_key(self, tok_entry: Path, pools: dict[str, Any]) -> dict[str, Any]:
        n1, _ = self.steps()
        lang = self.params["phase1_lang"]
        return {"stage": "meta-phase1", "code_version": CODE_VERSION, "tokenizer": tok_entry.name, "arch": self.arch(),
                "args": vars(self.lm_args(n1, self.params["pretrain_seed"])), "lang": lang,
                "pool": pools[lang].manifest()}

    def _phase1(self, tok_entry: Path, pools: dict[str, Any]) -> Path:
        """Phase 1 (meta-pretraining): MLM on one language, from a seeded random init; its own cache entry."""
        n1, _ = self.steps()
        lang = self.params["phase1_lang"]

        def build(out: Path, work: Path) -> dict[str, Any]:
            from transformers import AutoTokenizer

            from xbench.stages.blocks import blocks_by_language
            from xbench.stages.lm import init_model, state_sha256, train_lm

            tokenizer = AutoTokenizer.from_pretrained(tok_entry)
            args = self.lm_args(n1, self.params["pretrain_seed"])
            model = init_model(self.config(tokenizer), "mlm", args.seed)
            plan = blocks_by_language(tokenizer, {lang: pools[lang].lines}, "mlm", seq_len=args.seq_len,
                                      batch_size=args.batch_size, alpha=self.params["alpha"], seed=args.seed)
            run = train_lm(model, plan, "mlm", tokenizer, args, work / "run", name=f"meta phase 1 ({lang})",
                           role="transfer")
            run.fit.record.extra.update(phase=1, languages={lang: n1})
            model.save_pretrained(out)
            return {"stages": [run.fit.record.to_dict()], "final_state_sha256": state_sha256(model),
                    "losses": run.fit.losses}

        return cache.get_or_build("stages", self._phase1_key(tok_entry, pools), build)

    def _encoder_key(self, variant: str, tok_entry: Path, pools: dict[str, Any]) -> dict[str, Any]:
        key = {"method": "meta", "variant": variant, "code_version": CODE_VERSION, "langs": self.languages(),
               "params": self.params, "profile": self.ctx.profile["name"], "tokenizer": tok_entry.name,
               "pools": [pools[lang].manifest() for lang in pools]}
        n1, _ = self.steps()
        if variant == "meta" and n1:
            key["phase1"] = cache.entry_path("stages", self._phase1_key(tok_entry, pools)).name
        if variant == "single-phase":
            key["matches"] = cache.entry_path("encoders", self._encoder_key("meta", tok_entry, pools)).name
        return key

    def build_encoder(self, lang: str | None) -> Encoder:
        if lang is not None:
            raise XbenchError(f"method '{self.name}' builds one encoder shared by all target languages")
        pools = self.pools()
        tok_entry = self._tokenizer(pools)
        n1, n2 = self.steps()
        variant = self.variant
        phase1 = self._phase1(tok_entry, pools) if variant == "meta" and n1 else None
        key = self._encoder_key(variant, tok_entry, pools)
        p = self.params
        seed = p["pretrain_seed"] + 1  # phase 2 and the single phase: same seed, same sampler draws

        def build(out: Path, work: Path) -> dict[str, Any]:
            from transformers import AutoTokenizer

            from xbench.stages.blocks import blocks_by_language
            from xbench.metrics.retrieval import tatoeba_retrieval
            from xbench.stages.lm import init_model, load_lm, state_sha256, train_lm

            tokenizer = AutoTokenizer.from_pretrained(tok_entry)
            steps = n2 if variant == "meta" else n1 + n2
            # Without phase 1 (single-phase, or a 0 share) training starts from the init phase 1 would have used.
            model = load_lm(str(phase1), "mlm") if phase1 else init_model(self.config(tokenizer), "mlm",
                                                                          p["pretrain_seed"])
            start_sha = state_sha256(model)
            args = self.lm_args(steps, seed)
            plan = blocks_by_language(tokenizer, {lang: pools[lang].lines for lang in pools}, "mlm",
                                      seq_len=args.seq_len, batch_size=args.batch_size, alpha=p["alpha"], seed=seed)
            name = "meta phase 2" if variant == "meta" else "single phase"
            # A new Runner builds a new optimizer and schedule: phase 2 starts at Adam step 1, warm-up step 0.
            run = train_lm(model, plan, "mlm", tokenizer, args, work / "run", name=f"{name} ({'+'.join(pools)})",
                           role="transfer")
            run.fit.record.extra.update(sampling_probs=plan.probs, languages=plan.drawn(run.fit.record.optimizer_steps),
                                        start_state_sha256=start_sha, **({"phase": 2} if variant == "meta" else {}))
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            return {"stages": [run.fit.record.to_dict()], "losses": run.fit.losses,
                    "retrieval": tatoeba_retrieval(model, tokenizer, [x for x in pools if x != SOURCE_LANG],
                                                  self.ctx.data_dir),
                    "pools": {lang: pools[lang].manifest() for lang in pools}}

        path = cache.get_or_build("encoders", key, build)
        manifest = cache.read_entry(path)["manifest"]
        stages = cache.read_entry(tok_entry)["manifest"]["stages"]
        if phase1 is not None:
            stages = stages + cache.read_entry(phase1)["manifest"]["stages"]
        transductive = sorted({e for m in manifest["pools"].values() for e in pool_entries(m)})
        return Encoder(key=path.name, path=str(path), stages=[*stages, *manifest["stages"]],
                       provenance={"variant": variant, "cache_entry": path.name, "languages": list(pools),
                                   "tokenizer_entry": tok_entry.name, "phase1_entry": phase1.name if phase1 else None,
                                   "matches": key.get("matches"), "architecture": self.arch(),
                                   "pools": manifest["pools"], "retrieval": manifest["retrieval"],
                                   "reconstruction": "xbench reconstruction (docs/methods/meta.md): no public code"},
                       flags={"transductive": transductive, "xbench_reconstruction": True},
                       uses_source_weights=False)

    def extra_report(self, result: dict[str, Any]) -> dict[str, Any]:
        return transfer_report(result)


class MetaSingleMethod(MetaMethod):
    """The single-phase baseline (docs/methods/baselines.md, "meta-single"): the same code without phase 1,
    N1 + N2 steps."""

    name = "meta-single"
    kind = "baseline"
    compared_with = ""
    variant = "single-phase"
