"""Monolingual text pools for pretraining stages (methods.md §2.3, §10.5).

A pool is the deduplicated text of one language drawn from the data root. Every line whose
normalised form occurs in an evaluation split (XNLI test and dev-heldout, UD test) is dropped,
and the count is recorded: test sentences must never become pretraining text.
"""
from __future__ import annotations

import gzip
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbench.data.sources import data_root, file_hash
from xbench.errors import DataNotFoundError

# Treebanks under ud/ with a train or dev file that may feed a pool (never test files).
UD_TREEBANKS = {"en": "UD_English-EWT", "de": "UD_German-GSD", "zh": "UD_Chinese-GSDSimp", "ja": "UD_Japanese-GSD",
                "vi": "UD_Vietnamese-VTB", "el": "UD_Greek-GDT", "tr": "UD_Turkish-IMST"}
TATOEBA = {"ar": "ara", "bg": "bul", "zh": "cmn", "de": "deu", "el": "ell", "fr": "fra", "hi": "hin", "ru": "rus",
           "es": "spa", "sw": "swh", "th": "tha", "tr": "tur", "ur": "urd", "vi": "vie"}
XNLI_DEV_TRAIN_ROWS = 2241  # premise groups 0..746; the rest of dev is held out (§2.2)
TATOEBA_TRAIN_SHARE = 0.8   # the last 20% are the retrieval test set (§2.2)


def normalise(line: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", line)).strip()


@dataclass
class TextPool:
    lang: str
    lines: list[str]
    files: list[dict[str, str]] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)
    dropped_as_eval: int = 0
    duplicates: int = 0
    transductive: list[str] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        return {"lang": self.lang, "lines": len(self.lines), "words": sum(len(x.split()) for x in self.lines),
                "files": self.files, "sources": self.sources, "dropped_as_eval": self.dropped_as_eval,
                "duplicates": self.duplicates, "transductive": self.transductive}


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _conllu_text(path: Path) -> list[str]:
    with _open(path) as f:
        return [line.split("=", 1)[1].strip() for line in f if line.startswith("# text =")]


def _xnli_lines(path: Path, rows: slice) -> list[str]:
    with open(path, encoding="utf-8") as f:
        cols = [line.rstrip("\n").split("\t") for line in f][rows]
    out: list[str] = []
    for c in cols:
        out.extend(c[:2])
    return out


def evaluation_texts(root: Path, lang: str) -> set[str]:
    """Normalised sentences of every evaluation split a pool of `lang` could leak into."""
    texts: set[str] = set()
    test = root / "xnli" / "test" / f"{lang}.tsv"
    if test.is_file():
        texts.update(normalise(x) for x in _xnli_lines(test, slice(None)))
    dev = root / "xnli" / "dev" / f"{lang}.tsv"
    if dev.is_file():
        texts.update(normalise(x) for x in _xnli_lines(dev, slice(XNLI_DEV_TRAIN_ROWS, None)))
    for tb_dir in (root / "ud").glob("UD_*") if (root / "ud").is_dir() else []:
        for test_file in tb_dir.glob("*-ud-test.conllu*"):
            if test_file.name.split("_", 1)[0] == lang:
                texts.update(normalise(x) for x in _conllu_text(test_file))
    return texts


def build_pool(lang: str, data_dir: str | Path | None = None, *, include_xquad: bool = True) -> TextPool:
    root = data_root(data_dir)
    if root is None:
        raise DataNotFoundError(f"building the '{lang}-mono' text pool needs local data: set XBENCH_DATA or --data-dir")
    pool = TextPool(lang, [])
    candidates: list[tuple[str, Path, list[str]]] = []
    tb = UD_TREEBANKS.get(lang)
    if tb and (root / "ud" / tb).is_dir():
        files = sorted((root / "ud" / tb).glob("*-ud-train.conllu*")) or sorted((root / "ud" / tb).glob("*-ud-dev.conllu*"))
        for p in files:
            candidates.append(("ud", p, _conllu_text(p)))
    xnli_dev = root / "xnli" / "dev" / f"{lang}.tsv"
    if xnli_dev.is_file():
        candidates.append(("xnli-dev-train", xnli_dev, _xnli_lines(xnli_dev, slice(0, XNLI_DEV_TRAIN_ROWS))))
    xquad = root / "xquad" / f"xquad.{lang}.json"
    if include_xquad and xquad.is_file():
        data = json.loads(xquad.read_text(encoding="utf-8"))
        contexts = [p["context"] for art in data["data"] for p in art["paragraphs"]]
        candidates.append(("xquad", xquad, contexts))
        pool.transductive.append("xquad")
    code = TATOEBA.get(lang)
    if code:
        tat = root / "tatoeba" / f"tatoeba.{code}-eng.{code}"
        if tat.is_file():
            lines = tat.read_text(encoding="utf-8").splitlines()
            candidates.append(("tatoeba", tat, lines[: int(len(lines) * TATOEBA_TRAIN_SHARE)]))
    if not candidates:
        raise DataNotFoundError(f"no text for language '{lang}' under {root} (looked at ud/, xnli/dev, xquad/, tatoeba/)")
    banned = evaluation_texts(root, lang)
    seen: set[str] = set()
    for source, path, lines in candidates:
        pool.files.append({"path": str(path.relative_to(root)), "sha256": file_hash(path)})
        kept = 0
        for line in lines:
            norm = normalise(line)
            if not norm:
                continue
            if norm in banned:
                pool.dropped_as_eval += 1
            elif norm in seen:
                pool.duplicates += 1
            else:
                seen.add(norm)
                pool.lines.append(norm)
                kept += 1
        pool.sources[source] = kept
    return pool
