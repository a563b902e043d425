"""CLISM+CACR, span-masking continued pretraining of a multilingual encoder (docs/methods/clism.md), and the
rows it is read against:

- `clism`: the encoder after the CLISM + CACR + MLM stage; QA fine-tunes through the `[QUE]` head it
  trained (every question ends with `[QUE]`), other tasks with the standard heads;
- `clism-mlm-control`: the same source model, pairs, batch, learning rate and tokens, plain MLM on both
  sides of the pairs (the paper's "without CLISM + CACR"; docs/methods/baselines.md);
- `clism-span-head`: the `clism` encoder (the same cache entry) fine-tuned with the standard start/end
  head, an ablation that separates the encoder's gain from the head's.

One encoder per target language; pairs from the `parallel_en_<lang>` slot under the paper profile, the
shared data's en-<lang>-par pool otherwise.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from xbench import cache
from xbench.errors import XbenchError
from xbench.methods.base import Encoder, FinetuneHooks, Param
from xbench.methods.pairs import SOURCE_LANG, ParallelPairsMethod

CODE_VERSION = 1
QUE_TOKEN = "[QUE]"


class ClismMethod(ParallelPairsMethod):
    name = "clism"
    kind = "transfer"
    family = "clism"
    code_version = CODE_VERSION
    # The paper's question is whether the two span losses beat continued MLM on the same pairs.
    compared_with = "clism-mlm-control"
    variant = "clism"
    que_head = True
    parameters = {
        # the smoke column of docs/methods/clism.md, "Defaults"; the paper profile sets its own
        "lr": Param(5e-4, low=0, low_open=True), "batch_size": Param(16, low=1),
        "max_steps": Param(300, low=0, hint="0 = one pass over the examples"),
        "warmup_steps": Param(30, low=0), "weight_decay": Param(0.0, low=0),
        "max_len_each": Param(64, low=1), "max_len": Param(128, low=4), "max_span_words": Param(10, low=1),
        "mlm_prob": Param(0.15, low=0, high=1, low_open=True, high_open=True),
        "cacr_literal_tau": Param(False), "restrict_to_target": Param(False),
        "span_finder": Param("heuristic", choices=("auto", "heuristic", "panx", "spacy"),
                             hint="auto: spacy where a model is installed, else panx, else heuristic"),
        "aligner": Param("eflomal", choices=("eflomal",)),
        "symmetrisation": Param("grow-diag-final-and", choices=("grow-diag-final-and", "intersection", "union")),
        "pretrain_pairs": Param(0, low=0, hint="0 = every pair"), "pretrain_seed": Param(0, low=0),
    }

    def check(self, p: dict[str, Any]) -> list[str]:
        problems = []
        if SOURCE_LANG in self.ctx.langs:
            problems.append(f"method '{self.name}' masks spans of English sentences and points to them in a target "
                            f"language; '{SOURCE_LANG}' cannot be a target (--langs)")
        return problems

    def preflight_problems(self) -> list[str]:
        problems = []
        from xbench.aligners.eflomal_backend import PACKAGE
        import importlib.util

        if importlib.util.find_spec(PACKAGE) is None:
            problems.append(f"method '{self.name}' aligns words with eflomal, which is not installed "
                            "(pip install eflomal)")
        if self.params["span_finder"] == "spacy":
            from xbench.data.spans import spacy_problem

            problem = spacy_problem()
            if problem:
                problems.append(problem)
        if self.params["span_finder"] == "panx":
            from xbench.stages.tagger import panx_available

            if not panx_available(self.ctx.data_dir):
                problems.append(f"method '{self.name}': span_finder=panx trains an English tagger on PAN-X en train and "
                                "dev (panx/train-en.tsv.gz, panx/dev-en.tsv.gz under a data root); they were not found")
        return problems + self.pair_problems()

    def parallel(self, lang: str) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        pairs, manifest = super().parallel(lang)
        n = self.params["pretrain_pairs"]
        if n and n < len(pairs):  # the paper's pretraining-size ablation: the first n pairs
            pairs = pairs[:n]
            manifest = {**manifest, "pretrain_pairs": n}
        return pairs, manifest

    # ------------------------------------------------------------------ examples and budget

    def span_finder(self, src: Any, corpus: list[list[str]]) -> Any:
        """The span finder the `span_finder` parameter names; `auto` takes spaCy where a model package is
        installed, else the PAN-X tagger where PAN-X en is in the data roots, else the heuristic."""
        from xbench.data.spans import resolve_span_finder, spacy_problem
        from xbench.stages.tagger import panx_available, panx_span_finder

        name = self.params["span_finder"]
        if name == "auto":
            name = ("spacy" if spacy_problem() is None
                    else "panx" if panx_available(self.ctx.data_dir) else "heuristic")
        if name == "panx":
            return panx_span_finder(src.path, {"name": src.name, "weights": src.weights_sha256}, self.ctx.data_dir)
        return resolve_span_finder(name, corpus)

    def examples(self, tokenizer: Any, pairs: list[tuple[str, str]], src: Any) -> tuple[list[Any], dict[str, Any]]:
        """The pretraining examples of `pairs` (with `[QUE]` in `tokenizer`) and what building them recorded:
        the span finder used and its quality on PAN-X en dev, the aligner, the spans kept and dropped."""
        from xbench.aligners.backends import get_aligner
        from xbench.aligners.cached import align_cached, cache_key
        from xbench.data.spans import span_f1_on_panx
        from xbench.errors import DataNotFoundError
        from xbench.stages.clism_examples import build_examples
        from xbench.vocab.pretokenize import words

        p = self.params
        word_pairs = [(words(a), words(b)) for a, b in pairs]
        finder = self.span_finder(src, [s for s, _ in word_pairs])
        spans = finder.find_all([s for s, _ in word_pairs])
        kept = [(s, t) for s, t in word_pairs if s and t]
        aligner = get_aligner(p["aligner"], p["symmetrisation"])
        linked = iter(align_cached(aligner, kept))
        links = [next(linked).symmetric if s and t else () for s, t in word_pairs]
        examples, stats = build_examples(word_pairs, spans, links, tokenizer, que_token=QUE_TOKEN,
                                         max_len_each=p["max_len_each"], max_len=p["max_len"],
                                         max_span_words=p["max_span_words"])
        try:
            quality: dict[str, Any] = getattr(finder, "quality", None) or span_f1_on_panx(finder, self.ctx.data_dir)
        except DataNotFoundError as exc:
            quality = {"f1": None, "why": str(exc).splitlines()[0]}
        return examples, {"span_finder": finder.fingerprint(), "span_finder_panx_en_dev": quality,
                          "aligner": cache_key(aligner, kept), **stats.to_dict()}

    def steps(self, plan: Any) -> int:
        return self.params["max_steps"] or len(plan.batches(0))

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
            import torch
            from accelerate import PartialState
            from safetensors.torch import save_file
            from transformers import AutoTokenizer

            from xbench.loading import load_pretrained
            from xbench.models.heads.que_qa import HEAD_FILE
            from xbench.objectives.clism import CACR_SCALE, QueSpanHead
            from xbench.stages.clism import ClismArgs, ClismPlan, add_que_token, planned_counts, train_clism
            from xbench.stages.lm import load_lm, loss_trend, pretrain_mlm

            t0 = time.perf_counter()
            p = self.params
            tokenizer = load_pretrained(AutoTokenizer, src.path)
            model = load_lm(src.path, "mlm")
            add_que_token(model, tokenizer, QUE_TOKEN)
            examples, built = self.examples(tokenizer, pairs, src)
            plan = ClismPlan(examples, batch_size=p["batch_size"], seed=p["pretrain_seed"],
                             pad_id=tokenizer.pad_token_id)
            steps = self.steps(plan)
            warmup = min(p["warmup_steps"], steps)
            planned = planned_counts(plan, steps, PartialState().num_processes)
            extra: dict[str, Any] = {"role": "transfer", "lang": lang, "examples": len(examples),
                                     "examples_built": built}
            if variant == "clism":
                torch.manual_seed(p["pretrain_seed"])
                head = QueSpanHead(model.config.hidden_size)
                scale = 1.0 / 20.0 if p["cacr_literal_tau"] else CACR_SCALE
                args = ClismArgs(lr=p["lr"], batch_size=p["batch_size"], max_steps=steps, warmup_steps=warmup,
                                 weight_decay=p["weight_decay"], mlm_prob=p["mlm_prob"], cacr_scale=scale,
                                 restrict_to_target=p["restrict_to_target"], seed=p["pretrain_seed"])
                fit, parts = train_clism(model, head, plan, tokenizer, args, work / "run", name=f"CLISM en-{lang}")
                trends = {k: loss_trend(parts[k]) for k in ("clism", "cacr", "mlm")}
                extra.update(loss_parts=trends, loss_part_values=parts, cacr_scale=scale,
                             que_tokens=planned["que_tokens"])
                for part, trend in trends.items():
                    if not trend["loss_decreased"]:
                        import warnings

                        warnings.warn(f"CLISM en-{lang}: L_{part} did not go down (first tenth "
                                      f"{trend['loss_start']:.4f}, last tenth {trend['loss_end']:.4f})", stacklevel=2)
                save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(out / HEAD_FILE))
            else:
                # Plain MLM on both sides of the same pairs as separate lines, in blocks as long as X, until
                # CLISM's tokens (its three passes) are reached (docs/methods/baselines.md, "clism-mlm-control").
                lines = [a for a, _ in pairs] + [b for _, b in pairs]
                largs = {"lr": p["lr"], "batch_size": p["batch_size"], "seq_len": p["max_len"],
                         "warmup_steps": warmup, "weight_decay": p["weight_decay"], "max_steps": steps}
                fit = pretrain_mlm(model, tokenizer, lines, largs, work / "run", name=f"CLISM MLM control en+{lang}",
                                   max_tokens=planned["tokens_seen"], seed=p["pretrain_seed"])
                extra.update(matched_tokens=planned["tokens_seen"], lines=len(lines))
            fit.record.extra.update(extra)
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            return {"stages": [fit.record.to_dict()], "pairs": manifest, "examples": built,
                    "build_seconds": round(time.perf_counter() - t0, 3)}

        path = cache.get_or_build("encoders", key, build)
        manifest_out = cache.read_entry(path)["manifest"]
        return Encoder(key=path.name, path=str(path), stages=manifest_out["stages"], source_stages=src.stages,
                       provenance={"variant": variant, "source_model": src.name, "cache_entry": path.name,
                                   "pairs": manifest_out["pairs"], "matches": key.get("matches"),
                                   "examples": manifest_out["examples"]})

    def finetune_hooks(self, task_type: Any) -> FinetuneHooks | None:
        if not self.que_head or "question_marker" not in getattr(task_type, "method_input_names", ()):
            return None  # NER, XNLI, parsing: the standard heads (docs/methods/clism.md, "Fine-tuning")
        from xbench.models.heads.que_qa import que_qa_model

        return FinetuneHooks(head=lambda path, _task: que_qa_model(path, QUE_TOKEN),
                             head_name="[QUE] span head (QueQA)", inputs={"question_marker": QUE_TOKEN},
                             inputs_name=f"every question ends with {QUE_TOKEN}",
                             fingerprint={"que_qa": CODE_VERSION})


class ClismMlmControlMethod(ClismMethod):
    """CLISM's continued-pretraining control (docs/methods/baselines.md, "clism-mlm-control"): the same
    source model, pairs, batch, learning rate and tokens, plain MLM instead of the three losses."""

    name = "clism-mlm-control"
    kind = "baseline"
    compared_with = ""
    variant = "control"
    que_head = False


class ClismSpanHeadMethod(ClismMethod):
    """The `clism` encoder fine-tuned with the standard start/end head: the ablation that tells the
    encoder's part of the gain from the `[QUE]` head's (docs/methods/clism.md, "Rows")."""

    name = "clism-span-head"
    kind = "baseline"
    compared_with = ""
    variant = "clism"
    que_head = False
    encoder_method = "clism"  # the same cache entry: a sweep builds it once for both rows
