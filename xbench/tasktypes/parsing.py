"""Task type: dependency parsing (UD). Metrics: UAS, LAS, CLAS by the official CoNLL 2018 scorer.

The model is the encoder, word pooling over its subword vectors (first piece by default, mean as
an option) and a biaffine arc / label head (Dozat & Manning 2017); decoding is Chu-Liu/Edmonds
(or Eisner for projective trees), so every sentence gets a tree with exactly one root. DEPRELs are
predicted without subtype from the card's fixed list of the 37 UD relations, so a parser trained
on one treebank labels any other; the label of the word attached to ROOT is always ``root`` and
``root`` is never given to another word, as UD defines it.

Evaluation writes the system file as the gold file with only HEAD and DEPREL of the syntactic
words replaced (multiword-token lines and empty nodes copied verbatim, so the scorer's character
alignment is exact) and scores it with ``conll18_ud_eval`` through udtools.

Long sentences: training sentences that need more than ``max_length`` subword pieces are skipped
and counted in the result file. Evaluation sentences are never dropped: they are cut into
consecutive chunks of whole words that fit, each chunk is parsed on its own, and the root of every
chunk after the first is attached to the first chunk's root with DEPREL ``dep`` (UD's unspecified
relation); the number of such sentences is recorded too.

Language units: with the default treebanks a language is scored under its code (``de``); with
``--treebank pud`` under ``<lang>_pud``, so PUD and default-treebank scores never share a column.
"""
from __future__ import annotations

import importlib.metadata
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xbench.models.heads.biaffine import BiaffineParserHead
from xbench.vocab.words import pool_words
from xbench.data.conllu_io import Sentence, read_conllu, universal_deprel, write_conllu
from xbench.data.sources import Provenance, data_roots, local_file_record, no_data_message
from xbench.data.textfiles import memoised
from xbench.errors import ConfigError, DataFormatError, DataNotFoundError, XbenchError
from xbench.tasktypes.base import Split, TaskType, cached_features
from xbench.tasktypes.token_labelling import MODEL_INPUTS, effective_max_length, encode_sentences, sentences_by_chunks

# Inference batches: the label scores are [batch, words+1, words+1, labels] floats, so the budget
# is kept well below the shared default to bound memory on long-sentence treebanks.
PREDICT_BATCH_TOKENS = 8192
# Head defaults: the smoke profile's sizes (docs/protocols.md, "Task heads"); a card's params, then the profile's
# fine-tuning block, override them.
HEAD_DEFAULTS: dict[str, Any] = {"arc_mlp": 128, "label_mlp": 64, "dropout": 0.33, "pooling": "first", "decode": "mst"}
TREEBANK_CHOICES = ("default", "pud")
PUD_SUFFIX = "_pud"


@dataclass
class ParserOutput:
    arc: Tensor    # [B, W+1, W+1], scores[dependent, head], 0 = ROOT
    label: Tensor  # [B, W+1, W+1, n_labels]
    mask: Tensor   # [B, W] bool, True for real words


class BiaffineParser(nn.Module):
    """Encoder -> word vectors (pool_words) -> biaffine arc and label scores."""

    def __init__(self, encoder: nn.Module, n_labels: int, *, arc_mlp: int, label_mlp: int, dropout: float,
                 pooling: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.head = BiaffineParserHead(encoder.config.hidden_size, arc_mlp, label_mlp, n_labels, dropout)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, word_index: Tensor,
                token_type_ids: Tensor | None = None) -> ParserOutput:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs).last_hidden_state
        n_words = word_index.max(dim=1).values + 1  # words of each sequence; padding and specials are -1
        width = int(n_words.max())
        words = pool_words(hidden, word_index, width, self.pooling)  # type: ignore[arg-type]
        mask = torch.arange(width, device=word_index.device)[None, :] < n_words[:, None]
        arc, label = self.head(words, mask)
        return ParserOutput(arc, label, mask)


class DependencyParsing(TaskType):
    name = "parsing"
    version = 1
    option_names = ("treebank",)

    def __init__(self, card: Any, options: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> None:
        """``settings`` is the profile's fine-tuning block for parsing; of it only the head settings
        (arc_mlp, label_mlp, dropout, pooling, decode) are read, over the card's defaults."""
        super().__init__(card, options)
        choice = self.options.get("treebank", "default")
        if choice not in TREEBANK_CHOICES:
            raise ConfigError(f"task '{card.name}': --treebank {choice!r} is not one of {', '.join(TREEBANK_CHOICES)}")
        self.use_pud = choice == "pud"
        self.head_settings = {k: (settings or {}).get(k, card.params.get(k, v)) for k, v in HEAD_DEFAULTS.items()}
        if self.head_settings["pooling"] not in ("first", "mean"):
            raise ConfigError(f"parsing: pooling {self.head_settings['pooling']!r} is not 'first' or 'mean'")
        if self.head_settings["decode"] not in ("mst", "eisner"):
            raise ConfigError(f"parsing: decode {self.head_settings['decode']!r} is not 'mst' or 'eisner' "
                              "(greedy heads can form cycles, which the official scorer rejects)")
        # What the result file must say about the data; filled as splits are loaded and encoded.
        self._treebanks: dict[str, str] = {}
        self._skipped: dict[str, int] = {}
        self._chunked: dict[str, int] = {}

    @property
    def labels(self) -> list[str]:
        return list(self.card.params["labels"])

    @property
    def max_length(self) -> int:
        return int(self.card.params.get("max_length", 512))

    # ------------------------------------------------------------------ units and data
    def eval_units(self, langs: list[str]) -> list[str]:
        table = self.card.params["pud"] if self.use_pud else self.card.params["treebanks"]
        missing = [lang for lang in langs if lang not in table]
        if missing:
            if self.use_pud:
                raise XbenchError(f"task '{self.card.name}': no PUD test set for {', '.join(missing)}; "
                                  f"PUD exists for {', '.join(self.card.params['pud'])}")
            raise XbenchError(f"task '{self.card.name}': {', '.join(missing)} only has a PUD test set here; "
                              f"pass --treebank pud (treebanks exist for {', '.join(self.card.params['treebanks'])})")
        return [lang + PUD_SUFFIX if self.use_pud else lang for lang in langs]

    def treebank_of(self, unit: str) -> tuple[str, str]:
        """(language, treebank name) of a unit: ``de`` -> GSD, ``de_pud`` -> German-PUD."""
        lang, pud = (unit[:-len(PUD_SUFFIX)], True) if unit.endswith(PUD_SUFFIX) else (unit, False)
        table = self.card.params["pud" if pud else "treebanks"]
        if lang not in table:
            kind = "a PUD test set" if pud else "a treebank"
            raise XbenchError(f"task '{self.card.name}': no {kind} for '{lang}' (known: {', '.join(table)})")
        return lang, table[lang]

    def find_file(self, unit: str, split: str, data_dir: str | Path | None) -> tuple[Path, str, Path]:
        """(file, treebank name, data root) of a unit's split, searched as the card's data.local says.

        The data roots are searched in order (--data-dir first, then XBENCH_DATA): the first root that
        has the split wins, so a treebank folder under --data-dir overrides the same split elsewhere
        and the other splits are still found further down.
        """
        lang, treebank = self.treebank_of(unit)
        roots = data_roots(data_dir)
        if roots is None:
            raise DataNotFoundError(self._not_found(unit, split, treebank, []))
        pud = unit.endswith(PUD_SUFFIX)
        looked: list[str] = []
        lacking: list[tuple[Path, list[str]]] = []
        for root in roots.roots:
            for pattern in self.card.data["local"]:
                folder = root / pattern.format(treebank=treebank)
                if not folder.is_dir():
                    continue
                # A treebank's own folder holds one treebank; a flat folder (".") may hold several
                # languages, so there the file name's language code has to match as well.
                flat = pattern == "."
                code = f"{lang}_pud" if pud else f"{lang}_*"
                files = sorted(folder.glob(f"{code}-ud-*.conllu*" if flat else "*-ud-*.conllu*"))
                if flat and not pud:
                    files = [p for p in files if not p.name.startswith(f"{lang}_pud-")]
                files = [p for p in files if p.name.endswith((".conllu", ".conllu.gz"))]
                hits = [p for p in files if p.name.split("-ud-", 1)[1].split(".", 1)[0] == split]
                if len(hits) > 1:
                    raise XbenchError(f"{len(hits)} candidate files for {treebank} {split} in {folder}: "
                                      f"{', '.join(p.name for p in hits)}; keep one")
                if hits:
                    # A "." pattern is the root itself: its own name, not ".", tells the treebank.
                    folder_name = folder.resolve().name
                    name = folder_name if folder_name.startswith("UD_") else hits[0].name.split("-ud-")[0]
                    return hits[0], name, root
                if files or not flat:
                    lacking.append((folder, sorted({p.name.split("-ud-", 1)[1].split(".", 1)[0] for p in files})))
                else:
                    looked.append(str(folder / f"{code}-ud-{split}.conllu[.gz]"))
        if lacking:
            # The treebank is there but no root has this split: say so instead of "not found".
            have = sorted({s for _, splits in lacking for s in splits})
            raise DataNotFoundError(self._missing_split(unit, split, treebank,
                                                        " and ".join(str(f) for f, _ in lacking), have))
        raise DataNotFoundError(self._not_found(unit, split, treebank, looked))

    def _missing_split(self, unit: str, split: str, treebank: str, folder: Path | str, have: list[str]) -> str:
        msg = f"{treebank} has no {split} file in {folder} (it has: {', '.join(have) or 'none'})."
        if split == "train" and "dev" in have:
            msg += (f"\n  for {unit}, use --protocol in-language-lowres (trains on the dev file) or --protocol "
                    "zero-shot (trains on English-EWT), or --data-dir with a UD release that has the train file")
        return msg

    def _not_found(self, unit: str, split: str, treebank: str, looked: list[str]) -> str:
        folders = " or ".join(p.format(treebank=treebank) + "/" for p in self.card.data["local"] if p != ".")
        msg = no_data_message(f"{self.card.name} {unit}/{split} ({treebank})",
                              f"{folders} with *-ud-{split}.conllu[.gz] (or pass --data-dir with the treebank's own "
                              "folder)", None)
        if looked:
            msg += "\n  looked for: " + ", ".join(looked)
        return msg + ("\n  UD is read from local files only: the hub's universal_dependencies is a loading script; "
                      f"download UD {self.card.params['ud_version']} from {self.card.data.get('download')}")

    def load(self, lang: str, split: str, data_dir: str | Path | None, *, for_eval: bool) -> Split:
        path, treebank, root = self.find_file(lang, split, data_dir)
        sentences = memoised(read_conllu, path)
        if for_eval:
            self._treebanks[lang] = treebank
        else:
            # Training labels are looked up at featurisation, after the model is built; checking them
            # here lets the run's pre-flight report a bad DEPREL before any work starts.
            label_id = {label: i for i, label in enumerate(self.labels)}
            for s in sentences:
                if not all(universal_deprel(rel) in label_id for rel in s.deprels):
                    for k in range(len(s)):
                        self._label(label_id, s, k)
        return Split(lang, split, sentences, Provenance("local", files=[local_file_record(path, root)]))

    # ------------------------------------------------------------------ features
    def featurize(self, split: Split, tokenizer: Any, *, train: bool) -> list[dict[str, Any]]:
        max_length = effective_max_length(tokenizer, self.max_length)
        sentences: list[Sentence] = split.examples

        def build() -> dict[str, Any]:
            feats, skipped = encode_sentences(
                [s.words for s in sentences], tokenizer, max_length, split_long=not train,
                where=lambda i: f"{sentences[i].path}, line {sentences[i].start_line}")
            if train:
                label_id = {label: i for i, label in enumerate(self.labels)}
                for f in feats:
                    s = sentences[f["sentence"]]
                    f["heads"] = s.heads
                    f["rels"] = [self._label(label_id, s, k) for k in range(len(s))]
            return {"features": feats, "skipped": len(skipped)}

        key = self.feature_key(split, tokenizer, train, max_length=max_length, labels=self.labels)
        built = cached_features(key, build)
        if train:
            self._skipped[f"{split.lang}/{split.name}"] = built["skipped"]
        return built["features"]

    @staticmethod
    def _label(label_id: dict[str, int], s: Sentence, k: int) -> int:
        rel = universal_deprel(s.deprels[k])
        if rel not in label_id:
            raise DataFormatError(s.path, f"DEPREL {s.deprels[k]!r} is not a UD v2 relation", field="DEPREL",
                                  line=s.line_numbers[s.word_lines[k]], expected=", ".join(label_id))
        return label_id[rel]

    def pad_values(self, tokenizer: Any) -> dict[str, int]:
        return {"input_ids": tokenizer.pad_token_id or 0, "word_index": -1, "heads": -1, "rels": -100}

    # ------------------------------------------------------------------ model
    def build_model(self, encoder_path: str) -> BiaffineParser:
        from transformers import AutoModel

        hs = self.head_settings
        return BiaffineParser(AutoModel.from_pretrained(encoder_path), len(self.labels), arc_mlp=int(hs["arc_mlp"]),
                              label_mlp=int(hs["label_mlp"]), dropout=float(hs["dropout"]), pooling=hs["pooling"])

    def loss(self, model: Any, batch: dict[str, Any], ctx: Any) -> dict[str, Any]:
        out = model(**{k: batch[k] for k in (*MODEL_INPUTS, "word_index") if k in batch})
        width = out.mask.shape[1]
        head = model.module.head if hasattr(model, "module") else model.head  # DDP wraps the model
        return {"arc+label": head.loss(out.arc.float(), out.label.float(), batch["heads"][:, :width],
                                       batch["rels"][:, :width], out.mask)}

    def predict(self, model: Any, split: Split, features: Sequence[dict[str, Any]],
                tokenizer: Any) -> list[tuple[list[int], list[str]]]:
        """Per sentence, (HEAD column, DEPREL column) of its syntactic words."""
        from xbench.tasktypes.inference import batched_forward

        root = self.labels.index("root")
        chunks: list[tuple[list[int], list[int]]] = [([], []) for _ in features]
        for idx, out in batched_forward(model, features, self.pad_values(tokenizer), batch_tokens=PREDICT_BATCH_TOKENS,
                                        input_keys=(*MODEL_INPUTS, "word_index")):
            label = out.label
            # UD's definition of root: the ROOT arc is labelled root, and no other arc is.
            floor = torch.finfo(label.dtype).min
            label[:, :, 0, :] = floor
            label[:, :, 0, root] = 0.0
            label[:, :, 1:, root] = floor
            decoded = model.head.decode(out.arc, label, out.mask, self.head_settings["decode"])
            for k, (heads, rels) in zip(idx, decoded):
                chunks[k] = (heads.tolist(), rels.tolist())
        groups = sentences_by_chunks(features, len(split.examples))
        self._chunked[f"{split.lang}/{split.name}"] = sum(len(g) > 1 for g in groups)
        return [self._merge([features[k]["start"] for k in g], [chunks[k] for k in g]) for g in groups]

    def _merge(self, starts: list[int], parts: list[tuple[list[int], list[int]]]) -> tuple[list[int], list[str]]:
        """Join the chunk trees of one sentence into one tree (a single chunk passes through)."""
        heads: list[int] = []
        rels: list[str] = []
        sentence_root = 0
        for start, (hs, ls) in zip(starts, parts):
            for h, lab in zip(hs, ls):
                if h == 0 and sentence_root:  # a later chunk's root joins the first chunk's tree
                    heads.append(sentence_root)
                    rels.append("dep")
                    continue
                if h == 0:
                    sentence_root = len(heads) + 1
                heads.append(h + start if h else 0)
                rels.append(self.labels[lab])
        return heads, rels

    # ------------------------------------------------------------------ scores
    def score(self, split: Split, predictions: list[tuple[list[int], list[str]]]) -> dict[str, float]:
        from xbench.metrics.ud import score_conllu

        sentences: list[Sentence] = split.examples
        with tempfile.TemporaryDirectory(prefix="xbench-ud-") as tmp:
            system = Path(tmp) / "system.conllu"
            write_conllu(sentences, [h for h, _ in predictions], [r for _, r in predictions], system)
            s = score_conllu(sentences[0].path, system)
        return {"uas": s["uas"] / 100, "las": s["las"] / 100, "clas": s["clas"] / 100,
                "n": s["n_sentences"], "n_words": s["n_words"]}

    def predicted_labels(self, split: Split,
                         predictions: list[tuple[list[int], list[str]]]) -> tuple[list[str], list[str], int]:
        """One relation per syntactic word; gold relations without subtypes, as they are predicted."""
        from xbench.data.conllu_io import universal_deprel

        return ([r for _, rels in predictions for r in rels],
                [universal_deprel(r) for s in split.examples for r in s.deprels], len(self.labels))

    def prediction_records(self, split: Split, predictions: list[tuple[list[int], list[str]]]) -> list[dict[str, Any]]:
        """One record per sentence, in file order: write_conllu(read_conllu(gold), heads, deprels)
        with these columns rebuilds the scored system file. The gold heads and (universal) relations ride
        along so that the leaderboard's paired test can count each sentence's correct words from the
        predictions alone (xbench/results/significance.py)."""
        from xbench.data.conllu_io import universal_deprel

        return [{"index": i, "sent_id": s.sent_id, "heads": heads, "deprels": rels, "gold_heads": s.heads,
                 "gold_deprels": [universal_deprel(r) for r in s.deprels]}
                for i, (s, (heads, rels)) in enumerate(zip(split.examples, predictions))]

    def scoring_info(self) -> dict[str, Any]:
        return {
            "metric": self.card.metric,
            "scorer": f"CoNLL 2018 shared task conll18_ud_eval.py v1.2, via udtools {importlib.metadata.version('udtools')}",
            "deprel_subtypes": "ignored (predicted and scored as universal relations)",
            "punctuation": "included",
            "tokenisation": "gold (UAS/LAS/CLAS F1 equal accuracies)",
            "ud_version": str(self.card.params["ud_version"]),
            "treebanks": dict(sorted(self._treebanks.items())),
            "parser": {"head": "biaffine (Dozat & Manning 2017)", "labels": len(self.labels),
                       **self.head_settings, "max_length": self.max_length},
            "long_sentences": "training: skipped; evaluation: parsed in chunks, later chunk roots attached to the "
                              "first chunk's root as dep",
            "training_sentences_skipped_too_long": dict(sorted(self._skipped.items())),
            "evaluation_sentences_split_into_chunks": dict(sorted(self._chunked.items())),
        }
