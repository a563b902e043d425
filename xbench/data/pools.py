"""Monolingual text pools for pretraining stages (docs/data.md, "Text pools"; docs/protocols.md, "Data hygiene").

A pool is the deduplicated text of one language drawn from the data root. Every line whose
normalised form occurs in an evaluation split (XNLI test and dev-heldout, UD test, the Tatoeba
retrieval test lines) is dropped, and the count is recorded: test sentences must never become
pretraining text.
"""
from __future__ import annotations

import gzip
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from xbench.data.sources import DataRoots, data_roots, without_roots
from xbench.errors import ConfigError, DataFormatError, DataNotFoundError

# Treebanks under ud/ with a train or dev file that may feed a pool (never test files).
UD_TREEBANKS = {"en": "UD_English-EWT", "de": "UD_German-GSD", "zh": "UD_Chinese-GSDSimp", "ja": "UD_Japanese-GSD",
                "vi": "UD_Vietnamese-VTB", "el": "UD_Greek-GDT", "tr": "UD_Turkish-IMST"}
TATOEBA = {"ar": "ara", "bg": "bul", "zh": "cmn", "de": "deu", "el": "ell", "fr": "fra", "hi": "hin", "ru": "rus",
           "es": "spa", "sw": "swh", "th": "tha", "tr": "tur", "ur": "urd", "vi": "vie"}
XNLI_DEV_TRAIN_ROWS = 2241  # premise groups 0..746; the rest of dev is held out (docs/data.md)
TATOEBA_TRAIN_SHARE = 0.8   # the last 20% are the retrieval test set (docs/data.md)
# Optional pool sources, off by default (docs/data.md, "Text pools"): MLQA dev contexts and TyDiQA-GoldP
# train contexts.
POOL_EXTRAS = ("mlqa", "tydiqa")
# (extra, language) pairs whose text is training data in every protocol, so using it is not transductive:
# the English TyDiQA train file. The ko and sw train files are the offline TyDiQA test sets
# (docs/protocols.md, "Protocols").
TRAINING_ONLY_EXTRAS = {("tydiqa", "en")}


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
        """What the pool is, for cache keys and records: its files by relative path and hash (not the
        data roots they were found in, so a moved data folder does not invalidate every cache entry)."""
        return {"lang": self.lang, "lines": len(self.lines), "words": sum(len(x.split()) for x in self.lines),
                "files": without_roots(self.files), "sources": self.sources, "dropped_as_eval": self.dropped_as_eval,
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


def _roots(roots: DataRoots | Path) -> DataRoots:
    return roots if isinstance(roots, DataRoots) else DataRoots((Path(roots),), ("given",))


def evaluation_texts(roots: DataRoots | Path, lang: str) -> set[str]:
    """Normalised sentences of every evaluation split a pool of `lang` could leak into (in any data root)."""
    roots = _roots(roots)
    texts: set[str] = set()
    test = roots.find(f"xnli/test/{lang}.tsv")
    if test is not None:
        texts.update(normalise(x) for x in _xnli_lines(test, slice(None)))
    dev = roots.find(f"xnli/dev/{lang}.tsv")
    if dev is not None:
        texts.update(normalise(x) for x in _xnli_lines(dev, slice(XNLI_DEV_TRAIN_ROWS, None)))
    treebanks = sorted({d.name for root in roots.roots if (root / "ud").is_dir() for d in (root / "ud").glob("UD_*")})
    for tb in treebanks:
        for test_file in roots.glob(f"ud/{tb}", "*-ud-test.conllu*"):
            if test_file.name.split("_", 1)[0] == lang:
                texts.update(normalise(x) for x in _conllu_text(test_file))
    # Tatoeba retrieval test lines (docs/data.md, "Fixed splits"): the xx side for xx, and for English the
    # English side of every language file, since each file has English sentences of its own.
    codes = list(TATOEBA.values()) if lang == "en" else [TATOEBA[lang]] if lang in TATOEBA else []
    for code in codes:
        side = roots.find(f"tatoeba/tatoeba.{code}-eng.{'eng' if lang == 'en' else code}")
        if side is not None:
            lines = side.read_text(encoding="utf-8").splitlines()
            texts.update(normalise(x) for x in lines[int(len(lines) * TATOEBA_TRAIN_SHARE):])
    return texts


def build_pool(lang: str, data_dir: str | Path | None = None, *, include_xquad: bool = True,
               extras: Sequence[str] = ()) -> TextPool:
    """The `<lang>-mono` pool (docs/data.md, "Text pools"): UD train (else dev) `# text` lines, the XNLI
    dev-train part, XQuAD contexts and the first 80% of Tatoeba; `extras` adds optional sources (POOL_EXTRAS)."""
    unknown = sorted(set(extras) - set(POOL_EXTRAS))
    if unknown:
        raise ConfigError(f"unknown pool extra(s) {', '.join(unknown)}; valid: {', '.join(POOL_EXTRAS)}")
    roots = data_roots(data_dir)
    if roots is None:
        raise DataNotFoundError(f"building the '{lang}-mono' text pool needs local data: set XBENCH_DATA or --data-dir"
                                f" to a folder holding {' or '.join(pool_text_files(lang, include_xquad))}")
    pool = TextPool(lang, [])
    candidates: list[tuple[str, Path, list[str]]] = []
    for source, path in _pool_files(roots, lang, include_xquad):
        if source == "ud":
            candidates.append((source, path, _conllu_text(path)))
        elif source == "xnli-dev-train":
            candidates.append((source, path, _xnli_lines(path, slice(0, XNLI_DEV_TRAIN_ROWS))))
        elif source == "xquad":
            data = json.loads(path.read_text(encoding="utf-8"))
            candidates.append((source, path, [p["context"] for art in data["data"] for p in art["paragraphs"]]))
            pool.transductive.append("xquad")
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            candidates.append((source, path, lines[: int(len(lines) * TATOEBA_TRAIN_SHARE)]))
    for extra in sorted(set(extras)):
        found = _extra_contexts(roots, lang, extra)
        candidates.extend((extra, path, lines) for path, lines in found)
        if found and (extra, lang) not in TRAINING_ONLY_EXTRAS:
            pool.transductive.append(extra)
    if not candidates:
        raise DataNotFoundError(f"no text for language '{lang}' in the data roots {roots.describe()}: looked for "
                                f"{', '.join(pool_text_files(lang, include_xquad))}")
    fill_pool(pool, [(source, roots.record(path), lines) for source, path, lines in candidates],
          evaluation_texts(roots, lang))
    return pool


def fill_pool(pool: TextPool, candidates: list[tuple[str, dict[str, str], list[str]]], banned: set[str]) -> None:
    """Add each candidate's normalised lines to `pool`, dropping empty lines, evaluation sentences and
    duplicates, and counting what was dropped."""
    seen: set[str] = set()
    for source, record, lines in candidates:
        pool.files.append(record)
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
        pool.sources[source] = pool.sources.get(source, 0) + kept


def _pool_files(roots: DataRoots, lang: str, include_xquad: bool) -> list[tuple[str, Path]]:
    """(source, file) of every standard pool source the data roots hold for `lang`, in pool order."""
    out: list[tuple[str, Path]] = []
    tb = UD_TREEBANKS.get(lang)
    if tb:
        files = roots.glob_first(f"ud/{tb}", "*-ud-train.conllu*") or roots.glob_first(f"ud/{tb}", "*-ud-dev.conllu*")
        out += [("ud", p) for p in files]
    for source, rel in (("xnli-dev-train", f"xnli/dev/{lang}.tsv"),
                        ("xquad", f"xquad/xquad.{lang}.json" if include_xquad else None),
                        ("tatoeba", f"tatoeba/tatoeba.{TATOEBA[lang]}-eng.{TATOEBA[lang]}" if lang in TATOEBA else None)):
        path = roots.find(rel) if rel else None
        if path is not None:
            out.append((source, path))
    return out


def pool_problem(lang: str, data_dir: str | Path | None = None, *, include_xquad: bool = True) -> str | None:
    """Why the `<lang>-mono` pool cannot be built, found without reading it (for the run's pre-flight)."""
    roots = data_roots(data_dir)
    if roots is not None and _pool_files(roots, lang, include_xquad):
        return None
    where = f"the data roots {roots.describe()}" if roots is not None else "no data root (set XBENCH_DATA or --data-dir)"
    return (f"pretraining text for '{lang}' is needed by this method and there is none in {where}: looked for "
            f"{', '.join(pool_text_files(lang, include_xquad))}")


def _squad_contexts(path: Path) -> list[str]:
    with _open(path) as f:
        data = json.load(f)
    return [p["context"] for art in data["data"] for p in art["paragraphs"]]


def pool_text_files(lang: str, include_xquad: bool = True) -> list[str]:
    """The files (relative to a data root) a `<lang>-mono` pool is built from, for messages."""
    out = []
    tb = UD_TREEBANKS.get(lang)
    if tb:
        out.append(f"ud/{tb}/*-ud-train.conllu[.gz] (else *-ud-dev.conllu[.gz])")
    out.append(f"xnli/dev/{lang}.tsv")
    if include_xquad:
        out.append(f"xquad/xquad.{lang}.json")
    if lang in TATOEBA:
        out.append(f"tatoeba/tatoeba.{TATOEBA[lang]}-eng.{TATOEBA[lang]}")
    return out


def _extra_contexts(roots: DataRoots, lang: str, extra: str) -> list[tuple[Path, list[str]]]:
    if extra == "mlqa":
        files = roots.glob("mlqa/dev", f"dev-context-{lang}-question-*.json*")
    else:
        files = [p for p in [roots.find(f"tydiqa_goldp/train/tydiqa.goldp.{lang}.train.json")] if p is not None]
    return [(p, _squad_contexts(p)) for p in files]


# --------------------------------------------------------------------------- parallel pairs (docs/data.md)


@dataclass
class ParallelPool:
    """English–xx sentence pairs; `origins[i]` names the file(s) and line of pair i (data manifest)."""

    lang: str
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (en, xx): English first whatever the file order
    origins: list[str] = field(default_factory=list)
    files: list[dict[str, str]] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=lambda: {"empty": 0, "duplicate": 0, "ratio": 0, "eval": 0})

    def manifest(self) -> dict[str, Any]:
        return {"lang": self.lang, "pairs": len(self.pairs), "files": without_roots(self.files), "sources": self.sources,
                "dropped": dict(self.dropped)}


def build_parallel(lang: str, data_dir: str | Path | None = None, *, max_ratio: float = 3.0) -> ParallelPool:
    """The `en-<lang>-par` pool (docs/data.md, "Parallel pairs"): Tatoeba lines of the training part (first
    80%) and the XNLI dev-train part line-aligned with English (premises once per 3-line group, every hypothesis).

    Filters: empty sides, exact duplicate pairs, a word-length ratio above `max_ratio`
    (words by the pre-tokeniser of docs/data.md, so that Chinese is counted in characters), and any pair with a
    side in an evaluation split of its language. Cutting sides to a subword length is left to the
    stage that tokenises them.
    """
    from xbench.vocab.pretokenize import words

    if lang == "en":
        raise ConfigError("parallel pairs are English–xx; the target language cannot be English")
    roots = data_roots(data_dir)
    if roots is None:
        raise DataNotFoundError(f"building the 'en-{lang}-par' pool needs local data: set XBENCH_DATA or --data-dir")
    pool = ParallelPool(lang)
    candidates: list[tuple[str, list[Path], list[tuple[int, str, str]]]] = []
    code = TATOEBA.get(lang)
    if code:
        xx_f, en_f = (roots.find(f"tatoeba/tatoeba.{code}-eng.{side}") for side in (code, "eng"))
        if xx_f is not None and en_f is not None:
            xx, en = xx_f.read_text(encoding="utf-8").splitlines(), en_f.read_text(encoding="utf-8").splitlines()
            if len(xx) != len(en):
                raise DataFormatError(xx_f, f"{len(xx)} lines, but its English side {en_f.name} has {len(en)}",
                                      expected="line-aligned files of equal length")
            n = int(len(xx) * TATOEBA_TRAIN_SHARE)
            candidates.append(("tatoeba", [xx_f, en_f], [(i, en[i], xx[i]) for i in range(n)]))
    xx_f, en_f = roots.find(f"xnli/dev/{lang}.tsv"), roots.find("xnli/dev/en.tsv")
    if xx_f is not None and en_f is not None:
        rows_xx = [r.rstrip("\n").split("\t") for r in xx_f.read_text(encoding="utf-8").splitlines()][:XNLI_DEV_TRAIN_ROWS]
        rows_en = [r.rstrip("\n").split("\t") for r in en_f.read_text(encoding="utf-8").splitlines()][:XNLI_DEV_TRAIN_ROWS]
        triples = []
        for i, (a, b) in enumerate(zip(rows_en, rows_xx)):
            if i % 3 == 0:  # every 3 consecutive lines share a premise (docs/data.md, "Fixed splits")
                triples.append((i, a[0], b[0]))
            triples.append((i, a[1], b[1]))
        candidates.append(("xnli-dev-train", [xx_f, en_f], triples))
    if not candidates:
        raise DataNotFoundError(f"no parallel text for en–{lang} in the data roots {roots.describe()} "
                                "(looked at tatoeba/ and xnli/dev)")
    banned_en, banned_xx = evaluation_texts(roots, "en"), evaluation_texts(roots, lang)
    seen: set[tuple[str, str]] = set()
    for source, files, triples in candidates:
        pool.files.extend(roots.record(p) for p in files)
        kept = 0
        for line, en_text, xx_text in triples:
            en_n, xx_n = normalise(en_text), normalise(xx_text)
            if not en_n or not xx_n:
                pool.dropped["empty"] += 1
            elif en_n in banned_en or xx_n in banned_xx:
                pool.dropped["eval"] += 1
            elif (en_n, xx_n) in seen:
                pool.dropped["duplicate"] += 1
            else:
                a, b = len(words(en_n)), len(words(xx_n))
                if max(a, b) > max_ratio * max(1, min(a, b)):
                    pool.dropped["ratio"] += 1
                    continue
                seen.add((en_n, xx_n))
                pool.pairs.append((en_n, xx_n))
                pool.origins.append(f"{roots.relative(files[0])}:{line + 1}")
                kept += 1
        pool.sources[source] = pool.sources.get(source, 0) + kept
    return pool
