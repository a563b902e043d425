"""The `panx` span finder of CLISM (docs/methods/clism.md, "Span finder"): an English NER tagger that xbench
trains itself on PAN-X en train, from the run's source model, and keeps in the cache.

Why a tagger of its own: the paper finds entity spans with spaCy, whose English models are not on PyPI
and which xbench never downloads; a tagger trained here on the shared data is the next best thing and
needs nothing a user does not have. It labels the first subword of each word (the same layout as the
PAN-X task), trains through the shared runner for a fixed number of steps, and its untyped span F1 on
PAN-X en dev is written to the cache entry and to every run that uses it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xbench.data.panx import PANX_TAGS
from xbench.data.spans import MAX_SPAN_WORDS, RULES_VERSION, Span, apply_filters, bio_spans

CODE_VERSION = 1
NAME = "panx"


@dataclass
class TaggerArgs:
    lr: float = 3e-3
    batch_size: int = 32
    max_steps: int = 300
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    seed: int = 0


def _panx(split: str, data_dir: str | Path | None) -> tuple[list[tuple[list[str], list[str]]], Any]:
    from xbench.cards import get_task
    from xbench.data.panx import read_panx
    from xbench.data.resolve import local_then_hub, no_hub
    from xbench.data.textfiles import memoised

    rels = [pattern.format(split=split, lang="en") for pattern in get_task("panx").data.get("local", [])]
    return local_then_hub(rels, lambda _, path: memoised(read_panx, path, require_labels=True),
                          no_hub("the panx span finder trains on local PAN-X files only"), data_dir=data_dir,
                          what=f"the panx span finder's tagger (PAN-X en {split})", local_hint=" or ".join(rels),
                          hub_hint=None)


def panx_available(data_dir: str | Path | None) -> bool:
    """Whether PAN-X en train and dev are in the data roots (the tagger's training and check data)."""
    from xbench.errors import XbenchError

    try:
        _panx("train", data_dir)
        _panx("dev", data_dir)
    except XbenchError:
        return False
    return True


def _features(sentences: Sequence[tuple[list[str], list[str]]], tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    """Per sentence: input ids, attention mask and labels on each kept word's first subword (-100 elsewhere)."""
    from xbench.vocab.words import encode_words

    label_id = {t: i for i, t in enumerate(PANX_TAGS)}
    out = []
    for start in range(0, len(sentences), 256):
        chunk = sentences[start:start + 256]
        enc = encode_words([list(w) for w, _ in chunk], tokenizer, max_length)
        for row, (_, tags) in enumerate(chunk):
            n = int(enc["attention_mask"][row].sum())
            labels = [-100] * n
            for w in range(enc["n_words"][row]):
                labels[int(enc["first_subword"][row, w])] = label_id[tags[w]]
            out.append({"input_ids": enc["input_ids"][row, :n].tolist(),
                        "attention_mask": [1] * n, "labels": labels})
    return out


class TaggerSpanFinder:
    """Entity spans from a token-classification model's IOB2 tags (first subword of each word)."""

    name = NAME

    def __init__(self, model: Any, tokenizer: Any, entry: str, quality: dict[str, Any] | None = None,
                 max_length: int = 128) -> None:
        self.model, self.tokenizer, self.entry = model.eval(), tokenizer, entry
        self.quality, self.max_length = quality, max_length

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": NAME, "rules_version": RULES_VERSION, "tagger_entry": self.entry,
                "max_span_words": MAX_SPAN_WORDS}

    def find(self, words: Sequence[str]) -> list[Span]:
        return self.find_all([words])[0]

    def find_all(self, sentences: Sequence[Sequence[str]]) -> list[list[Span]]:
        import torch

        from xbench.vocab.words import encode_words

        out: list[list[Span]] = [[] for _ in sentences]
        todo = [i for i, s in enumerate(sentences) if s]
        with torch.inference_mode():
            for start in range(0, len(todo), 128):
                idx = todo[start:start + 128]
                enc = encode_words([list(sentences[i]) for i in idx], self.tokenizer, self.max_length)
                inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
                best = self.model(**inputs).logits.argmax(-1)
                for row, i in enumerate(idx):
                    n = enc["n_words"][row]
                    tags = [PANX_TAGS[int(best[row, int(enc["first_subword"][row, w])])] for w in range(n)]
                    out[i] = apply_filters(bio_spans(tags), list(sentences[i]))
        return out


def panx_span_finder(source_path: str, source_id: dict[str, Any], data_dir: str | Path | None,
                     args: TaggerArgs | None = None) -> TaggerSpanFinder:
    """The tagger of `source_path` (trained once per source model, PAN-X files and settings; cached)."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from xbench import cache
    from xbench.data.spans import span_f1
    from xbench.loading import load_pretrained

    args = args or TaggerArgs()
    train, train_prov = _panx("train", data_dir)
    dev, dev_prov = _panx("dev", data_dir)
    key = {"kind": "panx-span-tagger", "code_version": CODE_VERSION, "source": source_id, "args": asdict(args),
           "train": train_prov.hash, "dev": dev_prov.hash, "tags": list(PANX_TAGS)}

    def build(out: Path, work: Path) -> dict[str, Any]:
        import torch

        from xbench.runner.batching import FeaturePlan
        from xbench.runner.trainer import Runner, TrainArgs

        tokenizer = load_pretrained(AutoTokenizer, source_path)
        torch.manual_seed(args.seed)
        model = load_pretrained(AutoModelForTokenClassification, source_path, num_labels=len(PANX_TAGS),
                                id2label=dict(enumerate(PANX_TAGS)), label2id={t: i for i, t in enumerate(PANX_TAGS)})
        feats = _features(train, tokenizer, args.max_length)
        plan = FeaturePlan(feats, seed=args.seed, batch_size=args.batch_size,
                           pad_values={"input_ids": tokenizer.pad_token_id, "attention_mask": 0, "labels": -100})

        def loss(m: Any, batch: dict[str, Any], ctx: Any) -> dict[str, Any]:
            logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return {"ce": torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(),
                                                            ignore_index=-100)}

        fit = Runner(TrainArgs(lr=args.lr, max_steps=args.max_steps, warmup_ratio=args.warmup_ratio,
                               weight_decay=args.weight_decay, seed=args.seed), work / "run",
                     name="panx span tagger (en)").fit(model, plan, loss)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        quality = span_f1(TaggerSpanFinder(model, tokenizer, "", max_length=args.max_length), dev)
        return {"stages": [fit.record.to_dict()], "quality": quality, "train": train_prov.to_dict(),
                "dev": dev_prov.to_dict()}

    path = cache.get_or_build("span-taggers", key, build)
    manifest = cache.read_entry(path)["manifest"]
    model = load_pretrained(AutoModelForTokenClassification, str(path))
    tokenizer = load_pretrained(AutoTokenizer, str(path))
    return TaggerSpanFinder(model, tokenizer, path.name, manifest["quality"], args.max_length)
