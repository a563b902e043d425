"""TreLM (docs/methods/trelm.md; paper arXiv 2107.12627, reference code agcbi2017/TreLM) and its matched
scratch run `scratch-trelm`.

Stages A–H of docs/methods/trelm.md, "Stages", each its own cache entry keyed by its inputs (the
entries of the stages before it, its settings, its data), so an interrupted build resumes after the
last finished stage (and a training stage from its last checkpoint), and two configurations that
differ only in a later stage share the entries before it:

    A joint WordPiece (en + xx)  ->  B static vectors  ->  C mapping onto the source's embeddings
    ->  D create_trelm  ->  E commonality MLM  ->  F records (eflomal)  ->  F above-half, F below-half
    ->  G combine_halves  ->  H xx MLM  =  the encoder entry (with the downstream shell, downstream.py)

Every stage returns a stage record (auxiliary stages: wall time and provenance; training stages:
steps, tokens, FLOPs, seconds, loss trend), and the encoder carries all of them, so the result's
compute covers A–H. `scratch-trelm` builds the TreLM encoder first, then trains the same L + 1-layer
architecture from a random init on the target pool for the tokens of E + F + H.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbench import cache
from xbench.errors import XbenchError
from xbench.methods.base import Encoder, FinetuneHooks, Method, Param
from xbench.results.transductive import pool_entries

CODE_VERSION = 1
SOURCE_LANG = "en"
EN_ID, XX_ID = 0, 1  # xbench.models.trelm.EN / XX, named here so this module imports no torch
# xbench.objectives.cdlm.STAGE_F_REDUCTIONS, written out so that listing the parameters imports no torch.
STAGE_F_REDUCTIONS = ("reference", "per_objective")
TRANSFER_STAGES = ("E", "F above-half", "F below-half", "H")


@dataclass
class _Build:
    """What every stage of one target language reads: the source model, the pools and their pairs."""

    lang: str
    source: Any  # SourceModel
    en: Any  # TextPool
    xx: Any  # TextPool
    parallel: Any = None  # (pairs, manifest), read on first use


class TrelmMethod(Method):
    name = "trelm"
    kind = "transfer"
    scope = "per-language"
    compared_with = "scratch-trelm"
    parameters = {
        # Stage A: joint cased WordPiece (docs/methods/trelm.md, "Defaults": the smoke column)
        "vocab_size": Param(4000, low=6),
        # the alphabet of a Chinese target and of any other (the paper: 30,000 and 1,000); 0 = no limit
        "limit_alphabet": Param(300, low=0, hint="distinct characters kept for a target other than zh; 0 = all"),
        "limit_alphabet_zh": Param(3000, low=0, hint="distinct characters kept for a zh target; 0 = all"),
        # Stage B: skip-gram fastText of dimension H
        "static_epochs": Param(3, low=1),
        # Stage C: adversarial mapping and refinement (the rest at the reference values, docs/embeddings.md)
        "map_dis_hidden": Param(256, low=1), "map_epochs": Param(3, low=1), "map_epoch_size": Param(20000, low=1),
        "map_refinements": Param(1, low=0), "map_max_rank": Param(2000, low=1),
        # Stage F: word aligner (fast_align and GIZA++ are not built yet)
        "aligner": Param("eflomal", choices=("eflomal",)),
        # steps of Stage E, of each Stage-F run, of Stage H
        "e_steps": Param(150, low=1), "f_steps": Param(150, low=1), "h_steps": Param(300, low=1),
        "stage_e_en_share": Param(0.5, low=0, high=1, hint="the English share of Stage E's lines"),
        "stage_f_reduction": Param("reference", choices=STAGE_F_REDUCTIONS),
        # the optimiser of every training stage
        "lr": Param(3e-4, low=0, low_open=True), "warmup_steps": Param(15, low=0), "weight_decay": Param(0.01, low=0),
        "adam_eps": Param(1e-6, low=0, low_open=True), "max_grad_norm": Param(5.0, low=0, low_open=True),
        "batch_size": Param(16, low=1), "seq_len": Param(64, low=8),
        "grad_accum": Param(1, low=1, hint="micro-batches of batch_size per optimizer step"),
        "reference_quirks": Param(False),
        "pretrain_seed": Param(0, low=0),
    }

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self._builds: dict[str, _Build] = {}

    # ------------------------------------------------------------------ what the run checks first

    def targets(self) -> list[str]:
        return [lang for lang in self.ctx.langs if lang != SOURCE_LANG]

    def pretraining_languages(self) -> list[str]:
        return [SOURCE_LANG, *self.targets()]

    def data_slots(self) -> list[str]:
        """Slots a profile that reads slots (the paper profile) fills the pools and the pairs from."""
        return [f"mono_{SOURCE_LANG}", *(f"mono_{lang}" for lang in self.targets()),
                *(f"parallel_{SOURCE_LANG}_{lang}" for lang in self.targets())]

    def preflight_problems(self) -> list[str]:
        """The target languages, the source model (a BERT with an even layer count), the word aligner and
        the parallel pairs: each is one message in the run's pre-flight, before anything is built."""
        problems: list[str] = []
        if SOURCE_LANG in self.ctx.langs:
            problems.append(f"method '{self.name}' builds English→xx models from an English source: 'en' is its "
                            "source language, not a target; leave it out of --langs")
        problems += source_problems(self.name, self.ctx.model)
        try:
            from xbench.aligners import get_aligner

            get_aligner(self.params["aligner"])
        except XbenchError as exc:
            problems.append(f"method '{self.name}' aligns its parallel pairs for Stage F: {exc}")
        for lang in self.targets():
            problems += self._parallel_problems(lang)
        return problems

    def _parallel_problems(self, lang: str) -> list[str]:
        slots = self.ctx.slots
        if slots is not None and slots.active and (slots.get(f"parallel_{SOURCE_LANG}_{lang}") is not None
                                                   or not slots.allow_fallback):
            # The run's slot checks read a filled slot (an empty file is refused) and name a missing one.
            return []
        try:
            pairs, manifest = self.parallel(lang)
        except XbenchError as exc:
            return [f"method '{self.name}' (Stage F) needs English–{lang} sentence pairs: {exc}"]
        if not pairs:
            return [f"method '{self.name}' (Stage F) needs English–{lang} sentence pairs, but the parallel corpus is "
                    f"empty (files: {', '.join(f['path'] for f in manifest.get('files', [])) or 'none'}; pairs "
                    f"dropped by the filters: {manifest.get('dropped', {})})"]
        return []

    def limit_alphabet(self, lang: str) -> int:
        return int(self.params["limit_alphabet_zh" if lang == "zh" else "limit_alphabet"])

    # ------------------------------------------------------------------ data

    def parallel(self, lang: str) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        """(en, xx) pairs and their manifest: the `parallel_en_<lang>` slot where the profile reads slots,
        else the shared data's en-<lang>-par pool (docs/data.md, "Parallel pairs")."""
        from xbench.data.slots import method_parallel

        return method_parallel(lang, self.ctx.data_dir, self.ctx.slots, f"method '{self.name}'", SOURCE_LANG)

    def build(self, lang: str) -> _Build:
        if lang not in self._builds:
            from xbench.data.slots import method_pool
            from xbench.models.source_models import resolve_source_model

            problems = source_problems(self.name, self.ctx.model)
            if problems:
                raise XbenchError("; ".join(problems))
            src = resolve_source_model(self.ctx.model, self.ctx.data_dir)
            self._builds[lang] = _Build(lang, src, method_pool(SOURCE_LANG, self.ctx.data_dir, self.ctx.slots),
                                        method_pool(lang, self.ctx.data_dir, self.ctx.slots))
        return self._builds[lang]

    def stage_args(self, steps: int) -> Any:
        from xbench.stages.trelm import StageArgs

        p = self.params
        return StageArgs(lr=p["lr"], batch_size=p["batch_size"], seq_len=p["seq_len"], max_steps=steps,
                         warmup_steps=p["warmup_steps"], weight_decay=p["weight_decay"], adam_eps=p["adam_eps"],
                         max_grad_norm=p["max_grad_norm"], grad_accum=p["grad_accum"], seed=p["pretrain_seed"])

    def _key(self, stage: str, **inputs: Any) -> dict[str, Any]:
        return {"method": "trelm", "stage": stage, "code_version": CODE_VERSION, **inputs}

    # ------------------------------------------------------------------ Stage A: joint vocabulary

    def stage_a(self, b: _Build) -> Path:
        p = self.params
        key = self._key("A-vocabulary", vocab_size=p["vocab_size"], limit_alphabet=self.limit_alphabet(b.lang),
                        min_frequency=2, strip_accents=True, lowercase=False,
                        pools=[b.en.manifest(), b.xx.manifest()])

        def build(out: Path, work: Path) -> dict[str, Any]:
            from xbench.runner.compute import StageRecord
            from xbench.vocab.wordpiece import train_wordpiece, vocabulary_stats

            t0 = time.perf_counter()
            tok = train_wordpiece([*b.en.lines, *b.xx.lines], p["vocab_size"],
                                  limit_alphabet=self.limit_alphabet(b.lang), strip_accents=True)
            tok.save_pretrained(out)
            return {"stages": [StageRecord(name=f"TreLM A: joint WordPiece en+{b.lang}", kind="auxiliary",
                                           wall_seconds=round(time.perf_counter() - t0, 3),
                                           extra={"stage": "A", "role": "tokenizer", **vocabulary_stats(tok),
                                                  "limit_alphabet": self.limit_alphabet(b.lang),
                                                  "lines": {SOURCE_LANG: len(b.en.lines), b.lang: len(b.xx.lines)}}
                                           ).to_dict()]}

        return cache.get_or_build("stages", key, build)

    # ------------------------------------------------------------------ Stage B: static vectors

    def _hidden_size(self, b: _Build) -> int:
        from transformers import AutoConfig

        from xbench.loading import load_pretrained

        return int(load_pretrained(AutoConfig, b.source.path).hidden_size)

    def stage_b(self, b: _Build, a: Path) -> Path:
        from xbench.embeddings.static import StaticVectorSettings

        settings = StaticVectorSettings(dim=self._hidden_size(b), epochs=self.params["static_epochs"],
                                        seed=self.params["pretrain_seed"])
        key = self._key("B-static-vectors", vocabulary=a.name, settings=settings.to_dict(),
                        pools=[b.en.manifest(), b.xx.manifest()])

        def build(out: Path, work: Path) -> dict[str, Any]:
            import torch
            from safetensors.torch import save_file
            from transformers import AutoTokenizer

            from xbench.embeddings.static import token_frequencies, train_static_vectors
            from xbench.runner.compute import StageRecord

            t0 = time.perf_counter()
            tok = AutoTokenizer.from_pretrained(a)
            lines = [*b.en.lines, *b.xx.lines]
            sentences = [tok.convert_ids_to_tokens(ids) for ids in tok(lines, add_special_tokens=False)["input_ids"]]
            vocabulary = tok.convert_ids_to_tokens(list(range(len(tok))))
            vectors, report = train_static_vectors(sentences, vocabulary, settings)
            freqs = token_frequencies(sentences, vocabulary)
            save_file({"vectors": torch.from_numpy(vectors), "frequencies": torch.tensor(freqs, dtype=torch.long)},
                      str(out / "static.safetensors"))
            return {"stages": [StageRecord(name=f"TreLM B: static subword vectors en+{b.lang}", kind="auxiliary",
                                           wall_seconds=round(time.perf_counter() - t0, 3),
                                           extra={"stage": "B", "role": "static-vectors", **report}).to_dict()]}

        return cache.get_or_build("stages", key, build)

    # ------------------------------------------------------------------ Stage C: mapping

    def mapping_settings(self) -> Any:
        from xbench.embeddings.mapping import MappingSettings

        p = self.params
        return MappingSettings(dis_hidden=p["map_dis_hidden"], epochs=p["map_epochs"], epoch_size=p["map_epoch_size"],
                               refinements=p["map_refinements"], max_rank=p["map_max_rank"], seed=p["pretrain_seed"])

    def stage_c(self, b: _Build, bvec: Path) -> Path:
        settings = self.mapping_settings()
        key = self._key("C-mapping", static=bvec.name, source=b.source.name, source_weights=b.source.weights_sha256,
                        settings=settings.to_dict())

        def build(out: Path, work: Path) -> dict[str, Any]:
            from safetensors.torch import load_file, save_file

            from xbench.embeddings.mapping import map_embeddings
            from xbench.runner.compute import StageRecord
            from xbench.stages.lm import load_lm

            t0 = time.perf_counter()
            saved = load_file(str(bvec / "static.safetensors"))
            X, freqs = saved["vectors"], saved["frequencies"].tolist()
            source = load_lm(b.source.path, "mlm")
            Y = source.get_input_embeddings().weight.detach().float().cpu()
            order = sorted(range(len(freqs)), key=lambda i: (-freqs[i], i))  # most frequent first, ties by id
            W, report = map_embeddings(X, Y, settings, src_order=order)
            mapped = (X @ W.T).contiguous()
            save_file({"embeddings": mapped, "W": W.contiguous()}, str(out / "mapping.safetensors"))
            adversarial, refinement = report.get("adversarial", {}), report.get("refinement", {})
            summary = {"adversarial_criterion": adversarial.get("best_criterion"),
                       "refined_criterion": refinement.get("best_criterion"),
                       "adversarial_epochs": len(adversarial.get("epochs", [])),
                       "refinement_rounds": max(0, len(refinement.get("rounds", [])) - 1)}
            return {"stages": [StageRecord(name=f"TreLM C: embedding mapping onto {b.source.name}", kind="auxiliary",
                                           wall_seconds=round(time.perf_counter() - t0, 3),
                                           extra={"stage": "C", "role": "mapping", **summary,
                                                  "settings": settings.to_dict()}).to_dict()],
                    "report": report}

        return cache.get_or_build("stages", key, build)

    # ------------------------------------------------------------------ Stage D: the initial model

    def stage_d(self, b: _Build, a: Path, c: Path) -> Path:
        p = self.params
        key = self._key("D-create", vocabulary=a.name, mapping=c.name, source=b.source.name,
                        source_weights=b.source.weights_sha256, reference_quirks=p["reference_quirks"],
                        seed=p["pretrain_seed"])

        def build(out: Path, work: Path) -> dict[str, Any]:
            from safetensors.torch import load_file
            from transformers import AutoTokenizer

            from xbench.models.trelm import create_trelm, save_trelm
            from xbench.runner.compute import StageRecord, trainable_report
            from xbench.stages.lm import load_lm

            t0 = time.perf_counter()
            tok = AutoTokenizer.from_pretrained(a)
            embeddings = load_file(str(c / "mapping.safetensors"))["embeddings"]
            model = create_trelm(load_lm(b.source.path, "mlm"), embeddings, tok.pad_token_id,
                                 reference_quirks=p["reference_quirks"], seed=p["pretrain_seed"])
            save_trelm(model, out / "model")
            return {"stages": [StageRecord(name=f"TreLM D: initial model ({model.num_transformer_layers} layers)",
                                           kind="auxiliary", wall_seconds=round(time.perf_counter() - t0, 3),
                                           params=trainable_report(model),
                                           extra={"stage": "D", "role": "init",
                                                  "layers": model.num_transformer_layers,
                                                  "reference_quirks": p["reference_quirks"]}).to_dict()]}

        return cache.get_or_build("stages", key, build)

    # ------------------------------------------------------------------ Stage E: commonality MLM

    def stage_e_lines(self, b: _Build) -> tuple[list[str], list[str]]:
        return mix_lines(b.en.lines, b.xx.lines, self.params["stage_e_en_share"], self.params["pretrain_seed"])

    def stage_e(self, b: _Build, a: Path, d: Path) -> Path:
        p = self.params
        args = self.stage_args(p["e_steps"])
        key = self._key("E-commonality", vocabulary=a.name, start=d.name, args=vars(args),
                        en_share=p["stage_e_en_share"], pools=[b.en.manifest(), b.xx.manifest()])

        def build(out: Path, work: Path) -> dict[str, Any]:
            from transformers import AutoTokenizer

            from xbench.models.trelm import freeze_stage_e, load_trelm, save_trelm
            from xbench.stages.trelm import LanguageMLM, tagged_lines, train_stage

            tok = AutoTokenizer.from_pretrained(a)
            model = load_trelm(d / "model")
            frozen = freeze_stage_e(model)
            en_lines, xx_lines = self.stage_e_lines(b)
            plan = tagged_lines(tok, [(EN_ID, en_lines), (XX_ID, xx_lines)], seq_len=args.seq_len,
                                batch_size=args.batch_size, seed=args.seed)
            fit = train_stage(model, plan, LanguageMLM(tok), args, work / "run", name=f"TreLM E: commonality MLM en+{b.lang}",
                              role="transfer")
            fit.record.extra.update(stage="E", frozen_tensors=len(frozen),
                                    lines={SOURCE_LANG: len(en_lines), b.lang: len(xx_lines)},
                                    examples={SOURCE_LANG: plan.language_counts().get(EN_ID, 0),
                                              b.lang: plan.language_counts().get(XX_ID, 0)})
            save_trelm(model, out / "model")
            return {"stages": [fit.record.to_dict()], "losses": fit.losses}

        return cache.get_or_build("stages", key, build)

    # ------------------------------------------------------------------ Stage F: records, two runs

    def stage_f_records(self, b: _Build, a: Path) -> Path:
        from xbench.aligners import get_aligner

        p = self.params
        aligner = get_aligner(p["aligner"])
        if b.parallel is None:
            b.parallel = self.parallel(b.lang)
        pairs, manifest = b.parallel
        if not pairs:
            raise XbenchError(f"method '{self.name}' (Stage F): the English–{b.lang} parallel corpus is empty")
        key = self._key("F-records", vocabulary=a.name, parallel=manifest, max_subwords=p["seq_len"] - 3,
                        aligner=aligner.fingerprint())

        def build(out: Path, work: Path) -> dict[str, Any]:
            from transformers import AutoTokenizer

            from xbench.aligners import align_cached, cache_key
            from xbench.objectives.cdlm import cdlm_records_for_pair, write_cdlm_jsonl
            from xbench.runner.compute import StageRecord

            t0 = time.perf_counter()
            tok = AutoTokenizer.from_pretrained(a)
            # Both sides as joint-tokenizer subwords (what the aligner sees, as in the reference), cut so the
            # input with [CLS], [SEP] and the null slot fits one block.
            limit = p["seq_len"] - 3
            en_side = [tok.convert_ids_to_tokens(x[:limit]) for x in tok([e for e, _ in pairs], add_special_tokens=False)["input_ids"]]
            xx_side = [tok.convert_ids_to_tokens(x[:limit]) for x in tok([x for _, x in pairs], add_special_tokens=False)["input_ids"]]
            kept = [(e, x) for e, x in zip(en_side, xx_side) if e and x]
            links = align_cached(aligner, kept)
            aligned_at = time.perf_counter()
            forward, reverse = [], []
            for (e, x), ln in zip(kept, links):
                en_xx, xx_en = cdlm_records_for_pair(e, x, ln.forward, ln.reverse, xx_lang=b.lang, en_lang=SOURCE_LANG)
                forward.append(en_xx)
                reverse.append(xx_en)
            write_cdlm_jsonl(out / "en-xx.jsonl", forward)
            write_cdlm_jsonl(out / "xx-en.jsonl", reverse)
            record = StageRecord(name=f"TreLM F: CdLM records en-{b.lang} ({aligner.name})", kind="auxiliary",
                                 wall_seconds=round(time.perf_counter() - t0, 3),
                                 extra={"stage": "F records", "role": "alignment", "aligner": aligner.fingerprint(),
                                        "alignment_cache_key": cache_key(aligner, kept),
                                        "alignment_seconds": round(aligned_at - t0, 3), "pairs": len(kept),
                                        "skipped_empty": len(pairs) - len(kept),
                                        "forward_links": sum(len(ln.forward) for ln in links),
                                        "reverse_links": sum(len(ln.reverse) for ln in links)})
            return {"stages": [record.to_dict()], "parallel": manifest}

        return cache.get_or_build("stages", key, build)

    def stage_f(self, b: _Build, a: Path, e: Path, records: Path, run: str) -> Path:
        p = self.params
        args = self.stage_args(p["f_steps"])
        key = self._key(f"F-{run}", vocabulary=a.name, start=e.name, records=records.name, args=vars(args),
                        reduction=p["stage_f_reduction"])
        source_file = "en-xx.jsonl" if run == "above_half" else "xx-en.jsonl"
        label = {"above_half": f"above-half, en→{b.lang}", "below_half": f"below-half, {b.lang}→en"}[run]

        def build(out: Path, work: Path) -> dict[str, Any]:
            from transformers import AutoTokenizer

            from xbench.models.trelm import freeze_stage_f, load_trelm, save_trelm
            from xbench.objectives.cdlm import CdlmCollator, encode_cdlm_record, read_cdlm_jsonl, stage_f_examples
            from xbench.stages.trelm import CdlmExamples, CdlmLoss, train_stage

            tok = AutoTokenizer.from_pretrained(a)
            model = load_trelm(e / "model")
            frozen = freeze_stage_f(model, run)  # type: ignore[arg-type]
            langs = {SOURCE_LANG: EN_ID, b.lang: XX_ID}
            features = [encode_cdlm_record(r, tok, langs) for r in read_cdlm_jsonl(records / source_file)]
            examples = stage_f_examples(features, tok.pad_token_id, XX_ID)
            collator = CdlmCollator.for_tokenizer(tok, reference_quirks=model.reference_quirks)
            plan = CdlmExamples(examples, collator, batch_size=args.batch_size, seed=args.seed)
            fit = train_stage(model, plan, CdlmLoss(p["stage_f_reduction"]), args, work / "run",
                              name=f"TreLM F: CdLM {label}", role="transfer")
            fit.record.extra.update(stage=f"F {run.replace('_', '-')}", frozen_tensors=len(frozen),
                                    records=len(features), examples=len(examples))
            save_trelm(model, out / "model")
            return {"stages": [fit.record.to_dict()], "losses": fit.losses}

        return cache.get_or_build("stages", key, build)

    # ------------------------------------------------------------------ Stage G: combination

    def stage_g(self, b: _Build, above: Path, below: Path) -> Path:
        key = self._key("G-combine", above=above.name, below=below.name)

        def build(out: Path, work: Path) -> dict[str, Any]:
            from xbench.models.trelm import combine_halves, load_trelm, save_trelm
            from xbench.runner.compute import StageRecord

            t0 = time.perf_counter()
            model = load_trelm(above / "model")
            combined = combine_halves(model.state_dict(), load_trelm(below / "model").state_dict())
            model.load_state_dict(combined)
            save_trelm(model, out / "model")
            return {"stages": [StageRecord(name=f"TreLM G: combine the two Stage-F runs ({b.lang})", kind="auxiliary",
                                           wall_seconds=round(time.perf_counter() - t0, 3),
                                           extra={"stage": "G", "role": "combine"}).to_dict()]}

        return cache.get_or_build("stages", key, build)

    # ------------------------------------------------------------------ Stage H and the encoder

    def stages_a_to_g(self, lang: str) -> dict[str, Path]:
        """The cache entries of Stages A–G (each built if absent)."""
        b = self.build(lang)
        e: dict[str, Path] = {}
        e["A"] = self.stage_a(b)
        e["B"] = self.stage_b(b, e["A"])
        e["C"] = self.stage_c(b, e["B"])
        e["D"] = self.stage_d(b, e["A"], e["C"])
        e["E"] = self.stage_e(b, e["A"], e["D"])
        e["F records"] = self.stage_f_records(b, e["A"])
        e["F above-half"] = self.stage_f(b, e["A"], e["E"], e["F records"], "above_half")
        e["F below-half"] = self.stage_f(b, e["A"], e["E"], e["F records"], "below_half")
        e["G"] = self.stage_g(b, e["F above-half"], e["F below-half"])
        return e

    def build_encoder(self, lang: str | None) -> Encoder:
        if lang is None:
            raise XbenchError(f"method '{self.name}' builds one encoder per target language")
        return self.trelm_encoder(lang)

    def trelm_encoder(self, lang: str) -> Encoder:
        b = self.build(lang)
        entries = self.stages_a_to_g(lang)
        p = self.params
        args = self.stage_args(p["h_steps"])
        key = {"method": "trelm", "code_version": CODE_VERSION, "source": b.source.name,
               "source_weights": b.source.weights_sha256, "lang": lang, "params": p,
               "profile": self.ctx.profile["name"], "start": entries["G"].name, "vocabulary": entries["A"].name,
               "args": vars(args), "pool": b.xx.manifest()}

        def build(out: Path, work: Path) -> dict[str, Any]:
            from transformers import AutoTokenizer

            from xbench.methods.trelm.downstream import write_encoder_folder
            from xbench.models.trelm import load_trelm
            from xbench.stages.trelm import LanguageMLM, tagged_lines, train_stage

            tok = AutoTokenizer.from_pretrained(entries["A"])
            model = load_trelm(entries["G"] / "model")
            plan = tagged_lines(tok, [(XX_ID, b.xx.lines)], seq_len=args.seq_len, batch_size=args.batch_size,
                                seed=args.seed)
            fit = train_stage(model, plan, LanguageMLM(tok), args, work / "run", name=f"TreLM H: {lang} MLM",
                              role="transfer")
            fit.record.extra.update(stage="H", lines=len(b.xx.lines), examples=len(plan))
            write_encoder_folder(model, tok, out)
            return {"stages": [fit.record.to_dict()], "losses": fit.losses, "pool": b.xx.manifest()}

        path = cache.get_or_build("encoders", key, build)
        stages = [s for name in entries for s in cache.read_entry(entries[name])["manifest"]["stages"]]
        stages += cache.read_entry(path)["manifest"]["stages"]
        parallel = cache.read_entry(entries["F records"])["manifest"]["parallel"]
        flags: dict[str, Any] = {"transductive": sorted({*pool_entries(b.en.manifest()), *pool_entries(b.xx.manifest()),
                                                         *pool_entries(b.source.manifest.get("pool"))})}
        if p["reference_quirks"]:
            flags["reference_quirks"] = True
        return Encoder(
            key=path.name, path=str(path), stages=stages, source_stages=b.source.stages,
            provenance={"source_model": b.source.name, "weights_sha256": b.source.weights_sha256, "cache_entry": path.name,
                        "stage_entries": {name: entry.name for name, entry in entries.items()},
                        "pools": {SOURCE_LANG: b.en.manifest(), lang: b.xx.manifest()}, "parallel": parallel,
                        "aligner": p["aligner"], "reference_quirks": p["reference_quirks"],
                        "downstream": {"lang_id": XX_ID, "token_type_ids": "unused (type 0 everywhere)"}},
            flags=flags, uses_source_weights=True)

    # ------------------------------------------------------------------ fine-tuning

    def finetune_hooks(self, task_type: Any) -> FinetuneHooks:
        """The task type's own head over the L + 1-layer encoder, language id 1 (docs/methods/trelm.md,
        "Fine-tuning"): no HF model class can hold the TRILayer's second position add."""
        from xbench.methods.trelm.downstream import DOWNSTREAM_VERSION, HEAD_NAME, trelm_head

        return FinetuneHooks(head=trelm_head, head_name=HEAD_NAME,
                             fingerprint={"downstream_version": DOWNSTREAM_VERSION, "lang_id": XX_ID})


class TrelmScratchMethod(TrelmMethod):
    """scratch-trelm (docs/methods/baselines.md): TreLM's L + 1-layer architecture with language embeddings and
    its joint tokenizer, random init, MLM on the target pool for the tokens of the TreLM run's Stages E + F + H.
    Takes TreLM's parameters, to match a TreLM run that changed them."""

    name = "scratch-trelm"
    kind = "baseline"
    compared_with = ""

    def build_encoder(self, lang: str | None) -> Encoder:
        if lang is None:
            raise XbenchError(f"method '{self.name}' builds one encoder per target language")
        trelm = self.trelm_encoder(lang)
        budget = sum(s["tokens_seen"] for s in trelm.stages if s.get("extra", {}).get("role") == "transfer")
        b = self.build(lang)
        vocabulary = self.stage_a(b)  # TreLM's Stage-A entry, already built
        p = self.params
        key = {"method": "scratch-trelm", "code_version": CODE_VERSION, "architecture_of": b.source.name,
               "source_weights": b.source.weights_sha256, "lang": lang, "params": p,
               "profile": self.ctx.profile["name"], "vocabulary": vocabulary.name, "budget_tokens": budget,
               "pool": b.xx.manifest(), "matches": trelm.key}

        def build(out: Path, work: Path) -> dict[str, Any]:
            from transformers import AutoConfig, AutoTokenizer

            from xbench.loading import load_pretrained
            from xbench.methods.trelm.downstream import write_encoder_folder
            from xbench.methods.trelm.scratch import random_trelm
            from xbench.stages.trelm import LanguageMLM, steps_for_tokens, tagged_lines, train_stage

            tok = AutoTokenizer.from_pretrained(vocabulary)
            config = load_pretrained(AutoConfig, b.source.path)
            config.vocab_size, config.pad_token_id = len(tok), tok.pad_token_id
            model = random_trelm(config, seed=p["pretrain_seed"], reference_quirks=p["reference_quirks"])
            plan = tagged_lines(tok, [(XX_ID, b.xx.lines)], seq_len=p["seq_len"], batch_size=p["batch_size"],
                                seed=p["pretrain_seed"])
            args = self.stage_args(steps_for_tokens(plan, budget, p["grad_accum"]))
            fit = train_stage(model, plan, LanguageMLM(tok), args, work / "run", name=f"scratch-trelm: {lang} MLM",
                              role="transfer", max_tokens=budget)
            fit.record.extra.update(stage="scratch", budget_tokens=budget, matches=trelm.key, examples=len(plan))
            write_encoder_folder(model, tok, out)
            return {"stages": [fit.record.to_dict()], "losses": fit.losses, "budget_tokens": budget,
                    "pool": b.xx.manifest()}

        path = cache.get_or_build("encoders", key, build)
        manifest = cache.read_entry(path)["manifest"]
        # It pays for the joint tokenizer it uses (Stage A), not for TreLM's other stages.
        stages = [*cache.read_entry(vocabulary)["manifest"]["stages"], *manifest["stages"]]
        return Encoder(key=path.name, path=str(path), stages=stages,
                       provenance={"architecture_of": b.source.name, "cache_entry": path.name, "matches": trelm.key,
                                   "budget_tokens": budget, "vocabulary_entry": vocabulary.name,
                                   "pool": manifest["pool"],
                                   "downstream": {"lang_id": XX_ID, "token_type_ids": "unused (type 0 everywhere)"}},
                       flags={"transductive": pool_entries(manifest["pool"])}, uses_source_weights=False)


def mix_lines(en: list[str], xx: list[str], en_share: float, seed: int) -> tuple[list[str], list[str]]:
    """Stage E's lines: as many as the two pools allow with `en_share` of them English, each side a seeded
    sample in pool order (docs/methods/trelm.md, "Stage E")."""
    import numpy as np

    if en_share <= 0:
        return [], list(xx)
    if en_share >= 1:
        return list(en), []
    total = min(len(en) / en_share, len(xx) / (1 - en_share))
    n_en, n_xx = min(len(en), round(total * en_share)), min(len(xx), round(total * (1 - en_share)))
    rng = np.random.default_rng([seed, 13])

    def sample(lines: list[str], n: int) -> list[str]:
        return [lines[i] for i in sorted(rng.permutation(len(lines))[:n].tolist())]

    return sample(en, n_en), sample(xx, n_xx)


def source_config(model: str) -> dict[str, Any] | None:
    """The source model's config as a dict, read without building or loading the model: xbench's tiny
    models from their table, a local or packaged folder from its config.json, a hub name through
    transformers. None when a local folder has no readable config (the model pre-flight says so)."""
    from xbench.models.source_models import TINY_MODELS, packaged_model

    if model in TINY_MODELS:
        return dict(TINY_MODELS[model]["config"])
    packaged = packaged_model(model)
    folder = packaged[0] if packaged is not None else Path(model).expanduser()
    if folder.is_dir():
        try:
            raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return raw if isinstance(raw, dict) else None
    if model.startswith("xbench/"):
        return None  # an unknown xbench name: the model pre-flight names the ones xbench builds
    from transformers import AutoConfig

    from xbench.loading import load_pretrained

    return load_pretrained(AutoConfig, model).to_dict()


def source_problems(method: str, model: str) -> list[str]:
    """Why `model` cannot be TreLM's source: not a BERT, or an odd number of layers (the TRILayer goes
    after layer L/2 − 1, docs/methods/trelm.md, "Stages")."""
    try:
        config = source_config(model)
    except XbenchError as exc:
        return [f"method '{method}' reads the source model's config: {exc}"]
    if config is None:
        return []
    kind = config.get("model_type")
    if kind != "bert":
        return [f"method '{method}' transfers a BERT masked LM (model_type 'bert'), but --model {model} is "
                f"model_type {kind!r}: TreLM's TRILayer, freezing sets and Stage-G combination are defined on BERT "
                "layers (use a BERT source such as xbench/tiny-en-bert or bert-base-cased)"]
    layers = config.get("num_hidden_layers")
    if not isinstance(layers, int) or layers < 2 or layers % 2:
        return [f"method '{method}' needs a source BERT with an even number of layers (the TRILayer is inserted "
                f"after layer L/2 − 1 and Stage F freezes one half), but --model {model} has {layers}"]
    return []
