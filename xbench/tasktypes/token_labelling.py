"""Task type: token labelling (PAN-X / WikiANN NER). Metric: entity-level F1 (seqeval).

Words come from the data file and are never re-tokenised (xbench.vocab.words). Each word's
label sits on its first subword piece; the other pieces carry -100 and are ignored by the loss,
which is BERT's NER setup and XTREME's, so the head is a plain AutoModelForTokenClassification.

Predicted tags are the argmax at each word's first piece, repaired to valid IOB2 with
:func:`xbench.metrics.ner.repair_iob2` (an I-X that starts a sentence or follows O or another type
becomes B-X). seqeval's default mode reads unrepaired tags the same way, so the repair changes
the stored predictions, not the scores.

This module also holds :func:`encode_sentences`, the word-level featurisation that dependency
parsing shares: sentences longer than the model's window are skipped for training (and counted)
and cut into consecutive chunks for evaluation, so no evaluation word is ever dropped.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xbench.data.panx import labels_are_scorable, read_panx
from xbench.data.resolve import local_then_hub, no_hub
from xbench.data.sources import Provenance
from xbench.data.textfiles import memoised
from xbench.errors import XbenchError
from xbench.tasktypes.base import Split, TaskType, cached_features

MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
_ENCODE_BATCH = 256  # sentences per tokenizer call: large enough to amortise, small enough to pad little


def effective_max_length(tokenizer: Any, max_length: int) -> int:
    """The card's window, capped by what the tokenizer says the model accepts (if it says anything)."""
    limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a known limit report a huge sentinel (int(1e30)).
    return min(max_length, int(limit)) if isinstance(limit, int) and limit < 1_000_000 else max_length


def encode_sentences(words: Sequence[Sequence[str]], tokenizer: Any, max_length: int, *, split_long: bool,
                     where: Callable[[int], str]) -> tuple[list[dict[str, Any]], list[int]]:
    """Encode pre-split sentences into per-sequence features.

    Each feature holds ``input_ids``, ``attention_mask`` (and ``token_type_ids``), ``word_index``
    (the word of each piece, counted from the feature's first word; -1 for special tokens),
    ``first`` (the position of each word's first piece), ``sentence`` (index into ``words``) and
    ``start`` (the feature's first word in that sentence).

    A sentence needing more than ``max_length`` pieces is, with ``split_long``, cut into
    consecutive chunks of whole words, each its own feature (sorted by sentence, then start);
    without it, it is left out and its index returned in the second value. ``where(i)`` names
    sentence ``i`` for error messages.
    """
    from xbench.vocab.words import encode_words

    features: list[dict[str, Any]] = []
    skipped: list[int] = []
    for i, w in enumerate(words):
        if not w:
            raise XbenchError(f"{where(i)}: sentence without words")
    pending = [(i, 0) for i in range(len(words))]
    while pending:
        remainder: list[tuple[int, int]] = []
        for b in range(0, len(pending), _ENCODE_BATCH):
            batch = pending[b:b + _ENCODE_BATCH]
            enc = encode_words([list(words[i][s:]) for i, s in batch], tokenizer, max_length)
            keys = [k for k in MODEL_INPUTS if k in enc]
            for row, (i, start) in enumerate(batch):
                kept, cut = enc["n_words"][row], enc["n_truncated"][row]
                if cut and not split_long:
                    skipped.append(i)
                    continue
                if kept == 0:
                    raise XbenchError(f"{where(i)}: word {start + 1} ({words[i][start][:40]!r}) alone needs more than "
                                      f"max_length={max_length} subword pieces")
                # Select by the mask, not by a prefix, so left-padding tokenizers work too.
                real = enc["attention_mask"][row].bool()
                feat = {k: enc[k][row][real].tolist() for k in keys}
                feat["word_index"] = enc["word_index"][row][real].tolist()
                feat["first"] = _first_positions(feat["word_index"])
                feat["sentence"], feat["start"] = i, start
                features.append(feat)
                if cut:
                    remainder.append((i, start + kept))
        pending = remainder
    features.sort(key=lambda f: (f["sentence"], f["start"]))
    return features, skipped


def _first_positions(word_index: list[int]) -> list[int]:
    out: list[int] = []
    prev = -1
    for pos, w in enumerate(word_index):
        if w >= 0 and w != prev:
            out.append(pos)
        prev = w
    return out


def sentences_by_chunks(features: Sequence[dict[str, Any]], n_sentences: int) -> list[list[int]]:
    """Feature indices of each sentence, in word order (features come sorted by encode_sentences)."""
    groups: list[list[int]] = [[] for _ in range(n_sentences)]
    for k, f in enumerate(features):
        groups[f["sentence"]].append(k)
    return groups


class TokenLabelling(TaskType):
    name = "token-labelling"
    version = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What the result file must say about the data; filled as splits are loaded and encoded.
        self._skipped: dict[str, int] = {}
        self._chunked: dict[str, int] = {}
        self._scored: dict[str, str] = {}

    @property
    def labels(self) -> list[str]:
        return list(self.card.params["labels"])

    @property
    def max_length(self) -> int:
        return int(self.card.params.get("max_length", 128))

    # ------------------------------------------------------------------ data
    def load(self, lang: str, split: str, data_dir: str | Path | None, *, for_eval: bool) -> Split:
        data = self.card.data
        hub = data.get("hub")

        def read_local(_: int, path: Path) -> list[tuple[list[str], list[str]]]:
            # read_panx checks every tag against IOB2 over PER/ORG/LOC, naming file and line.
            examples = memoised(read_panx, path, require_labels=True)
            # The reader knows PAN-X's tags; a card with another label set would otherwise fail
            # with a KeyError at featurisation, after the model is built.
            unknown = sorted({t for _, tags in examples for t in tags} - set(self.labels))
            if unknown:
                raise XbenchError(f"{path}: tags {unknown} are not in task '{self.card.name}''s label set "
                                  f"{self.labels}")
            return examples

        notes = []
        if split == "test":
            notes.append("PAN-X test labels are not public in the shared data; the shared-data setting "
                         "(--profile smoke) evaluates on the dev files")
        examples, prov = local_then_hub(
            [pattern.format(split=split, lang=lang) for pattern in data.get("local", [])], read_local,
            (lambda: self._from_hub(hub, lang, split)) if hub is not None else no_hub("no hub source in the task card"),
            data_dir=data_dir, what=f"{self.card.name} {lang}/{split}",
            local_hint=" or ".join(p.format(split=split, lang=lang) for p in data.get("local", [])),
            hub_hint=f"datasets.load_dataset('{hub['path']}', '{lang}') split {split}" if hub else None, notes=notes)
        if for_eval:
            self._scored[f"{lang}/{split}"] = (f"local {prov.files[0]['path']}" if prov.source == "local" else
                                               f"hub {prov.hub['path']}/{prov.hub['name']} {prov.hub['split']}")
        return Split(lang, split, examples, prov)

    def _from_hub(self, hub: dict[str, Any], lang: str, split: str) -> tuple[list[tuple[list[str], list[str]]], Provenance]:
        import datasets  # heavy; only on the hub path

        name = hub.get("name", "{lang}").format(lang=lang)
        hub_split = hub.get("splits", {}).get(split, split)
        ds = datasets.load_dataset(hub["path"], name, split=hub_split, revision=hub.get("revision"))
        where = f"hub dataset {hub['path']}/{name} split {hub_split}"
        names = list(ds.features["ner_tags"].feature.names)
        examples: list[tuple[list[str], list[str]]] = []
        for row, r in enumerate(ds):
            tokens, tags = list(r["tokens"]), [names[t] for t in r["ner_tags"]]
            if not tokens or len(tokens) != len(tags) or any(not t for t in tokens):
                raise XbenchError(f"{where}, row {row}: malformed example ({len(tokens)} tokens, {len(tags)} tags, "
                                  f"{sum(not t for t in tokens)} empty tokens)")
            examples.append((tokens, tags))
        unknown = sorted(set(names) - set(self.labels))
        if unknown:
            raise XbenchError(f"{where}: tags {unknown} are not in the card's label set {self.labels}")
        if not labels_are_scorable(examples):
            raise XbenchError(f"{where}: no entity labels (every tag is O); it cannot be trained on or scored")
        prov = Provenance("hub", hub={"path": hub["path"], "name": name, "split": hub_split,
                                      "revision": hub.get("revision"), "fingerprint": ds._fingerprint})
        return examples, prov

    # ------------------------------------------------------------------ features
    def featurize(self, split: Split, tokenizer: Any, *, train: bool) -> list[dict[str, Any]]:
        max_length = effective_max_length(tokenizer, self.max_length)
        label_id = {label: i for i, label in enumerate(self.labels)}

        def build() -> dict[str, Any]:
            words = [tokens for tokens, _ in split.examples]
            feats, skipped = encode_sentences(words, tokenizer, max_length, split_long=not train,
                                              where=lambda i: f"{self.card.name} {split.lang}/{split.name} sentence {i + 1}")
            for f in feats:
                tags = split.examples[f["sentence"]][1][f["start"]:]
                piece_labels = [-100] * len(f["input_ids"])
                for w, pos in enumerate(f["first"]):
                    piece_labels[pos] = label_id[tags[w]]
                f["labels"] = piece_labels
            return {"features": feats, "skipped": len(skipped)}

        key = self.feature_key(split, tokenizer, train, max_length=max_length, labels=self.labels)
        built = cached_features(key, build)
        if train:
            self._skipped[f"{split.lang}/{split.name}"] = built["skipped"]
        return built["features"]

    def pad_values(self, tokenizer: Any) -> dict[str, int]:
        return {"input_ids": tokenizer.pad_token_id or 0, "labels": -100, "word_index": -1}

    # ------------------------------------------------------------------ model
    def build_model(self, encoder_path: str) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(
            encoder_path, num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)), label2id={l: i for i, l in enumerate(self.labels)})

    def loss(self, model: Any, batch: dict[str, Any], ctx: Any) -> dict[str, Any]:
        import torch

        logits = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}).logits
        labels = batch["labels"]
        return {"ce": torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)}

    def predict(self, model: Any, split: Split, features: Sequence[dict[str, Any]], tokenizer: Any) -> list[list[str]]:
        from xbench.metrics.ner import repair_iob2
        from xbench.tasktypes.inference import batched_forward

        chunk_tags: list[list[str]] = [[] for _ in features]
        for idx, out in batched_forward(model, features, self.pad_values(tokenizer), input_keys=MODEL_INPUTS):
            best = out.logits.argmax(-1).cpu()
            for row, k in enumerate(idx):
                chunk_tags[k] = [self.labels[p] for p in best[row, features[k]["first"]].tolist()]
        groups = sentences_by_chunks(features, len(split.examples))
        self._chunked[f"{split.lang}/{split.name}"] = sum(len(g) > 1 for g in groups)
        return [repair_iob2([t for k in g for t in chunk_tags[k]]) for g in groups]

    # ------------------------------------------------------------------ scores
    def score(self, split: Split, predictions: list[list[str]]) -> dict[str, float]:
        from xbench.metrics.ner import score_ner

        s = score_ner([tags for _, tags in split.examples], predictions)
        return {"f1": s["f1"] / 100, "precision": s["precision"] / 100, "recall": s["recall"] / 100,
                "n": s["n_sentences"], "n_entities": s["n_entities"]}

    def predicted_labels(self, split: Split, predictions: list[list[str]]) -> tuple[list[str], list[str], int]:
        """One tag per word."""
        return ([t for tags in predictions for t in tags], [t for _, tags in split.examples for t in tags],
                len(self.labels))

    def prediction_records(self, split: Split, predictions: list[list[str]]) -> list[dict[str, Any]]:
        return [{"index": i, "tokens": tokens, "gold": gold, "pred": pred}
                for i, ((tokens, gold), pred) in enumerate(zip(split.examples, predictions))]

    def scoring_info(self) -> dict[str, Any]:
        import importlib.metadata

        return {
            "metric": self.card.metric,
            "scorer": f"seqeval {importlib.metadata.version('seqeval')}, default (conlleval-compatible) mode, "
                      "entity-level micro precision / recall / F1",
            "scheme": "IOB2",
            "labels": self.labels,
            "labelling": "one label per word, on its first subword piece",
            "decoding": "argmax per word, then repair_iob2: an I-X that starts a sentence or follows O or "
                        "another type becomes B-X (seqeval scores unrepaired tags the same way)",
            "max_length": self.max_length,
            "evaluation_data": dict(sorted(self._scored.items())),
            "eval_note": " ".join(str(self.card.params.get("eval_note", "")).split()),
            "training_sentences_skipped_too_long": dict(sorted(self._skipped.items())),
            "evaluation_sentences_split_into_chunks": dict(sorted(self._chunked.items())),
        }
