"""CLP-Transfer (docs/methods/clp.md; code: malteos/clp-transfer `clp.py`) and its matched controls.

The target model has the source model's architecture and non-embedding weights; its token
embeddings come from `clp_transfer` (overlap copied, missing tokens as helper-similarity-weighted
sums of overlapping source rows), and it then continues pretraining on target text for a token
budget. The helper is a smaller target-language model that xbench trains itself (docs/methods/clp.md,
"Stages"): a tokenizer of the source's family (WordPiece for BERT sources, byte-level BPE for GPT-2
sources) on the target pool, and a 1-layer, d=32 LM of the source's kind. 5% of the target pool,
chosen by line hash, is held out of every training stage (tokenizer, helper, continued
pretraining) and gives the held-out perplexity curve.

Three variants share every piece except the initialisation, so that they differ only there
(docs/methods/clp.md, "Matched baselines"): `clp`; `scratch` (random init, same architecture and target
tokenizer, same data and training tokens: the scratch baseline, method `scratch-clp`); and `source+random-emb` (source
weights with random token embeddings: CLP's continued-pretraining control, used by `xbench curves`).
The two controls are cache entries that record the key of the CLP entry whose tokens they match.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbench import cache
from xbench.errors import ConfigError, XbenchError
from xbench.methods.base import Encoder, Method, Param
from xbench.results.transductive import pool_entries

CODE_VERSION = 2  # 2: stage records carry the loss trend
VARIANTS = ("clp", "scratch", "source+random-emb")
HELPER_POSITIONS = {"mlm": 512, "clm": 256}


@dataclass
class _Target:
    """What every variant of one target language shares: source, data split and helper."""

    source: Any  # SourceModel
    objective: str  # "mlm" or "clm", from the source architecture
    family: str  # "wordpiece" or "byte-bpe", from the source tokenizer
    pool: Any  # TextPool
    train: list[str]
    heldout: list[str]
    helper: Path  # the helper stage's cache entry: model and target tokenizer
    source_has_head: bool = True  # False: a headless encoder (e.g. all-MiniLM-L6-v2) gets a fresh LM head


def tokenizer_family(tokenizer: Any) -> str:
    """'wordpiece' or 'byte-bpe': the kind of target tokenizer xbench trains to match a source."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = type(backend.model).__name__ if backend is not None else ""
    pre = type(backend.pre_tokenizer).__name__ if backend is not None and backend.pre_tokenizer is not None else ""
    if model == "WordPiece":
        return "wordpiece"
    if model == "BPE" and pre == "ByteLevel":
        return "byte-bpe"
    raise XbenchError(f"CLP-Transfer trains its helper tokenizer in the source tokenizer's family; xbench trains "
                      f"WordPiece and byte-level BPE, but '{tokenizer.name_or_path}' is {model or 'unknown'} "
                      f"with a {pre or 'missing'} pre-tokenizer")


class ClpMethod(Method):
    name = "clp"
    kind = "transfer"
    scope = "per-language"
    compared_with = "scratch-clp"
    parameters = {
        # continued pretraining (the transfer stage); smoke values, docs/methods/clp.md, "Defaults"
        "steps": Param(300, low=1), "budget_tokens": Param(0, low=0, hint="0 = steps x batch_size x seq_len"),
        "lr": Param(5e-4, low=0, low_open=True), "warmup_steps": Param(20, low=0), "weight_decay": Param(0.01, low=0),
        "batch_size": Param(16, low=1), "seq_len": Param(64, low=8), "eval_steps": Param("0,25,50,100,200,300"),
        "heldout_share": Param(0.05, low=0, high=1, low_open=True, high_open=True),
        # helper: same optimiser settings and batch as the transfer stage (xbench default)
        "helper_layers": Param(1, low=1), "helper_dim": Param(32, low=1), "helper_heads": Param(2, low=1),
        "helper_vocab": Param(2000, low=1), "helper_steps": Param(300, low=1),
        # a helper trained from nothing may need a higher lr than the transfer stage continuing a pretrained model
        "helper_lr": Param(0.0, low=0, hint="0 = the transfer stage's lr"),
        # WordPiece helpers keep at most this many distinct characters (0: all); the rest become [UNK]
        "helper_limit_alphabet": Param(1000, low=0),
        # initialisation, docs/methods/clp.md, "Initialisation"
        "init_output": Param("clp", choices=("clp", "copy_input")),
        "on_small_denominator": Param("warn", choices=("warn", "fallback_mean")),
        "control_init": Param("model_init", choices=("model_init", "source_stats")),
        "pretrain_seed": Param(0, low=0),
    }

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self._source: tuple[Any, str] | None = None
        self._targets: dict[str, _Target] = {}

    def resolve_params(self, given: dict[str, Any]) -> dict[str, Any]:
        p = super().resolve_params(given)
        p["eval_steps"] = ",".join(map(str, sorted({int(s) for s in p["eval_steps"].split(",") if s.strip()})))
        return p

    def check(self, p: dict[str, Any]) -> list[str]:
        # Under the paper profile the target text comes from the mono_<lang> slots (data_slots), which the
        # run's pre-flight checks (docs/protocols.md, "Data slots").
        problems: list[str] = []
        if p["helper_heads"] >= 1 and p["helper_dim"] % p["helper_heads"]:
            problems.append(f"helper_dim ({p['helper_dim']}) must be a multiple of helper_heads ({p['helper_heads']})")
        try:
            steps = [int(s) for s in str(p["eval_steps"]).split(",") if s.strip()]
        except ValueError:
            steps = []
            problems.append(f"eval_steps must be comma-separated integers, got '{p['eval_steps']}'")
        if any(s < 0 for s in steps):
            problems.append(f"eval_steps must be >= 0, got '{p['eval_steps']}'")
        return problems

    # ------------------------------------------------------------------ shared pieces

    def budget(self) -> int:
        p = self.params
        return int(p["budget_tokens"] or p["steps"] * p["batch_size"] * p["seq_len"])

    def lm_args(self, steps: int, lr: float = 0.0) -> Any:
        from xbench.stages.lm import LMArgs

        p = self.params
        return LMArgs(lr=lr or p["lr"], batch_size=p["batch_size"], seq_len=p["seq_len"], max_steps=steps,
                      warmup_steps=p["warmup_steps"], weight_decay=p["weight_decay"], seed=p["pretrain_seed"])

    def source(self) -> tuple[Any, str]:
        """The resolved source model and its objective ("mlm" or "clm")."""
        if self._source is None:
            from transformers import AutoConfig

            from xbench.loading import load_pretrained
            from xbench.models.source_models import resolve_source_model
            from xbench.stages.lm import lm_objective_of

            src = resolve_source_model(self.ctx.model, self.ctx.data_dir)
            self._source = (src, lm_objective_of(load_pretrained(AutoConfig, src.path)))
        return self._source

    def encoder_source(self) -> None:
        """Fine-tuning needs a masked-LM encoder; CLP from a causal source is for `xbench curves`."""
        src, objective = self.source()
        if objective != "mlm":
            raise XbenchError(f"method '{self.name}' builds a causal LM from '{src.name}', but fine-tuning tasks need a "
                              "masked-LM encoder: pass --model xbench/tiny-en-bert (or another BERT-style model); "
                              "the causal-LM path of CLP is `xbench curves --method clp --lang <lang>`")

    def target(self, lang: str) -> _Target:
        if lang in self._targets:
            return self._targets[lang]
        from transformers import AutoTokenizer

        from xbench.stages.blocks import heldout_split
        from xbench.data.slots import method_pool
        from xbench.loading import load_pretrained

        src, objective = self.source()
        family = tokenizer_family(load_pretrained(AutoTokenizer, src.path))
        pool = method_pool(lang, self.ctx.data_dir, self.ctx.slots)
        train, heldout = heldout_split(pool.lines, self.params["heldout_share"])
        helper = self._helper(lang, objective, family, pool, train)
        from transformers import AutoConfig

        from xbench.stages.lm import has_lm_head

        self._targets[lang] = _Target(src, objective, family, pool, train, heldout, helper,
                                      has_lm_head(load_pretrained(AutoConfig, src.path)))
        return self._targets[lang]

    def _helper(self, lang: str, objective: str, family: str, pool: Any, train: list[str]) -> Path:
        """The helper stage (its own cache entry, shared by all variants): tokenizer, then a small LM."""
        p = self.params
        arch = {"layers": p["helper_layers"], "dim": p["helper_dim"], "heads": p["helper_heads"]}
        key = {"stage": "clp-helper", "code_version": CODE_VERSION, "lang": lang, "objective": objective,
               "family": family, "vocab_size": p["helper_vocab"], "arch": arch,
               "limit_alphabet": p["helper_limit_alphabet"] if family == "wordpiece" else None,
               "args": vars(self.lm_args(p["helper_steps"], p["helper_lr"])),
               "pool": pool.manifest(), "heldout_share": p["heldout_share"]}

        def build(out: Path, work: Path) -> dict[str, Any]:
            from transformers import AutoTokenizer, BertConfig, GPT2Config

            from xbench.atomic import reuse_or_clear, save_pretrained_atomic
            from xbench.vocab.bpe import train_byte_bpe
            from xbench.stages.blocks import packed_blocks
            from xbench.stages.lm import init_model, train_lm
            from xbench.vocab.wordpiece import train_wordpiece, vocabulary_stats
            from xbench.runner.compute import StageRecord

            t0 = time.perf_counter()
            tok_dir = work / "tokenizer"
            if reuse_or_clear(tok_dir, also=(work / "run",)):
                tokenizer = AutoTokenizer.from_pretrained(tok_dir)
            else:
                tokenizer = (train_wordpiece(train, p["helper_vocab"], limit_alphabet=p["helper_limit_alphabet"])
                             if family == "wordpiece"
                             else train_byte_bpe(train, p["helper_vocab"], model_max_length=HELPER_POSITIONS["clm"]))
                save_pretrained_atomic(tokenizer, tok_dir)
            tok_record = StageRecord(name=f"CLP target tokenizer {lang}", kind="auxiliary",
                                     wall_seconds=round(time.perf_counter() - t0, 3),
                                     extra={"role": "tokenizer", "family": family, **vocabulary_stats(tokenizer, family),
                                            "limit_alphabet": p["helper_limit_alphabet"] if family == "wordpiece" else None,
                                            "trained_on_lines": len(train)})
            if objective == "mlm":
                config = BertConfig(vocab_size=len(tokenizer), hidden_size=arch["dim"], num_hidden_layers=arch["layers"],
                                    num_attention_heads=arch["heads"], intermediate_size=2 * arch["dim"],
                                    max_position_embeddings=HELPER_POSITIONS["mlm"], pad_token_id=tokenizer.pad_token_id,
                                    architectures=["BertForMaskedLM"])
            else:
                config = GPT2Config(vocab_size=len(tokenizer), n_embd=arch["dim"], n_layer=arch["layers"],
                                    n_head=arch["heads"], n_positions=HELPER_POSITIONS["clm"],
                                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                    architectures=["GPT2LMHeadModel"])
            args = self.lm_args(p["helper_steps"], p["helper_lr"])
            model = init_model(config, objective, args.seed)
            plan = packed_blocks(tokenizer, train, objective, seq_len=args.seq_len, batch_size=args.batch_size,
                                 seed=args.seed)
            run = train_lm(model, plan, objective, tokenizer, args, work / "run", name=f"CLP helper {lang}", role="helper")
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            return {"stages": [tok_record.to_dict(), run.fit.record.to_dict()], "losses_first_last":
                    [run.fit.losses[0], run.fit.losses[-1]]}

        return cache.get_or_build("stages", key, build)

    # ------------------------------------------------------------------ variants

    def pretraining_languages(self) -> list[str]:
        return list(self.ctx.langs)  # scratch-clp inherits it: the same target pools

    def data_slots(self) -> list[str]:
        """The slots a profile that reads slots (the paper profile) fills this method's target text from."""
        return [f"mono_{lang}" for lang in self.pretraining_languages()]

    def build_encoder(self, lang: str | None) -> Encoder:
        if lang is None:
            raise XbenchError(f"method '{self.name}' builds one encoder per target language")
        self.encoder_source()
        return self.build_variant(lang, "clp")

    def matched_baseline(self, lang: str, variant: str) -> Encoder:
        """A control (`scratch` or `source+random-emb`) trained on exactly the tokens of the CLP run's transfer stage."""
        clp = self.build_variant(lang, "clp")
        tokens = sum(s["tokens_seen"] for s in clp.stages if s.get("extra", {}).get("role") == "transfer")
        return self.build_variant(lang, variant, matches=clp.key, budget=tokens)

    def build_variant(self, lang: str, variant: str, *, matches: str | None = None,
                      budget: int | None = None) -> Encoder:
        """The encoder entry of one variant: initialisation, then the transfer stage for `budget` tokens
        (default: this method's own budget), with the held-out curve; `matches` names the CLP entry a
        control is matched to."""
        if variant not in VARIANTS:
            raise ConfigError(f"unknown CLP variant '{variant}'; valid: {', '.join(VARIANTS)}")
        t = self.target(lang)
        src = t.source
        budget = self.budget() if budget is None else budget
        p = self.params
        key = {"method": "clp", "variant": variant, "code_version": CODE_VERSION, "source": src.name,
               "source_weights": src.weights_sha256, "lang": lang, "params": p, "profile": self.ctx.profile["name"],
               "pool": t.pool.manifest(), "helper": t.helper.name, "budget_tokens": budget, "matches": matches}

        def build(out: Path, work: Path) -> dict[str, Any]:
            from transformers import AutoTokenizer

            from xbench.stages.blocks import packed_blocks
            from xbench.stages.lm import PerplexityEval, train_lm
            from xbench.runner.compute import StageRecord

            helper_tok = AutoTokenizer.from_pretrained(t.helper)
            stages = []
            t0 = time.perf_counter()
            model, report = self._initialise(variant, t, helper_tok)
            if variant != "scratch":
                extra: dict[str, Any] = {"role": "init", "clp": report}
                if not t.source_has_head:
                    extra["lm_head"] = ("fresh: the source checkpoint has no LM head, so transform and bias are newly "
                                        "initialised and the decoder is tied to the input embeddings")
                stages.append(StageRecord(name=f"{variant} init {lang}", kind="auxiliary",
                                          wall_seconds=round(time.perf_counter() - t0, 3), extra=extra).to_dict())
            args = self.lm_args(p["steps"])
            plan = packed_blocks(helper_tok, t.train, t.objective, seq_len=args.seq_len, batch_size=args.batch_size,
                                 seed=args.seed)
            steps = -(-budget // plan.tokens_per_batch)
            heldout = PerplexityEval(helper_tok, t.heldout, t.objective, seq_len=args.seq_len)
            run = train_lm(model, plan, t.objective, helper_tok, args, work / "run", name=f"{variant} {t.objective} {lang}",
                           max_tokens=budget, evaluate=heldout, role="transfer",
                           eval_steps=[s for s in map(int, p["eval_steps"].split(",")) if s <= steps])
            model.save_pretrained(out)
            # The target tokenizer serves the target model, whose context is the source's, not the helper's.
            positions = getattr(model.config, "max_position_embeddings", None)
            if positions:
                helper_tok.model_max_length = positions
            helper_tok.save_pretrained(out)
            stages.append(run.fit.record.to_dict())
            return {"stages": stages, "curve": run.curve, "clp": report, "objective": t.objective,
                    "budget_tokens": budget, "pool": t.pool.manifest(),
                    "heldout": {"share": p["heldout_share"], "lines": len(t.heldout), "tokens": heldout.tokens},
                    "train_lines": len(t.train), "final_loss": sum(run.fit.losses[-20:]) / min(20, len(run.fit.losses))}

        path = cache.get_or_build("encoders", key, build)
        manifest = cache.read_entry(path)["manifest"]
        helper_stages = cache.read_entry(t.helper)["manifest"]["stages"]
        # A control pays for the target tokenizer (it needs one) but not for the helper LM it never uses.
        shared = helper_stages if variant == "clp" else helper_stages[:1]
        return Encoder(
            key=path.name, path=str(path), stages=[*shared, *manifest["stages"]],
            source_stages=src.stages if variant != "scratch" else [],
            provenance={"source_model": src.name, "weights_sha256": src.weights_sha256, "variant": variant,
                        "objective": manifest["objective"], "cache_entry": path.name, "helper_entry": t.helper.name,
                        "matches": matches, "budget_tokens": manifest["budget_tokens"], "pool": manifest["pool"],
                        "heldout": manifest["heldout"], "curve": manifest["curve"], "clp": manifest["clp"]},
            # The source weights carry what the source model's pool held (tiny-en-bert: XQuAD en contexts).
            flags={"transductive": sorted({*pool_entries(manifest["pool"]),
                                           *(pool_entries(src.manifest.get("pool")) if variant != "scratch" else [])})},
            uses_source_weights=variant != "scratch")

    def _initialise(self, variant: str, t: _Target, helper_tok: Any) -> tuple[Any, dict[str, Any] | None]:
        """The model a variant starts its transfer stage from, and CLP's report where there is one."""
        from transformers import AutoConfig, AutoTokenizer

        from xbench.stages.lm import init_model, load_lm
        from xbench.loading import load_pretrained

        p = self.params
        if variant == "scratch":
            config = load_pretrained(AutoConfig, t.source.path)
            config.vocab_size = len(helper_tok)
            _speak(config, helper_tok)
            return init_model(config, t.objective, p["pretrain_seed"]), None
        source = load_lm(t.source.path, t.objective)
        source_tok = load_pretrained(AutoTokenizer, t.source.path)
        if variant == "clp":
            from xbench.models.initializers import clp_transfer

            helper = load_lm(str(t.helper), t.objective)
            model, report = clp_transfer(source, source_tok, helper, helper_tok, init_output=p["init_output"],
                                         on_small_denominator=p["on_small_denominator"])
            return model, report.to_dict()
        return _with_random_embeddings(source, source_tok, helper_tok, p["control_init"], p["pretrain_seed"]), None


class ClpScratchMethod(ClpMethod):
    """The scratch baseline CLP is compared with (docs/methods/baselines.md): CLP's architecture, target
    tokenizer, target data and transfer-stage tokens, random init. Takes the same parameters, to match a CLP run that
    changed them."""

    name = "scratch-clp"
    kind = "baseline"
    compared_with = ""

    def build_encoder(self, lang: str | None) -> Encoder:
        if lang is None:
            raise XbenchError(f"method '{self.name}' builds one encoder per target language")
        self.encoder_source()
        return self.matched_baseline(lang, "scratch")


def _speak(config: Any, tokenizer: Any) -> None:
    # The source config's special ids refer to the source vocabulary; the new model speaks the target's.
    for attr in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if hasattr(config, attr):
            setattr(config, attr, getattr(tokenizer, attr))


def _with_random_embeddings(source: Any, source_tok: Any, target_tok: Any, scheme: str, seed: int) -> Any:
    """The source model resized to the target vocabulary with random token rows (the source+random-emb
    control of docs/methods/clp.md, "Matched baselines").

    Input rows come from `random_init`; an untied output matrix gets its own random rows and an
    output bias starts at zero, as a fresh head would.
    """
    import torch

    from xbench.models.initializers import random_init

    target = copy.deepcopy(source)
    with torch.random.fork_rng(devices=[]):  # the resized rows are overwritten: keep the caller's RNG
        target.resize_token_embeddings(len(target_tok), mean_resizing=False)
    emb = target.get_input_embeddings()
    out = target.get_output_embeddings()
    with torch.no_grad():
        emb.weight.copy_(random_init(source, source_tok, target_tok, scheme=scheme, seed=seed))
        if out is not None and out.weight is not emb.weight:
            out.weight.copy_(random_init(source, source_tok, target_tok, scheme=scheme, seed=seed + 1))
        if out is not None and getattr(out, "bias", None) is not None:
            out.bias.zero_()
    _speak(target.config, target_tok)
    if emb.padding_idx is not None:
        emb.padding_idx = target_tok.pad_token_id
    return target
