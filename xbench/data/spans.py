"""The span finder of CLISM + CACR (docs/methods/clism.md, "Span finder").

CLISM masks informative spans of the English side of a parallel pair. The paper finds them with
spaCy NER; xbench cannot download a spaCy model, so the span finder has backends tried in order
(`resolve_span_finder`): `spacy` where a user installed a spaCy English model package, and the
`heuristic` (capitalised phrases and numbers) everywhere else. Every backend's spans go through the
same filters (`apply_filters`), and `span_f1_on_panx` scores a finder against PAN-X en dev, so
that runs made with different backends can be compared.

A span is ``(start, end, type)`` over the words of one sentence: word indices, `end` exclusive.
The words are xbench's pre-tokenised words (`xbench.vocab.pretokenize.words`), or the given
tokens of a pre-tokenised corpus such as PAN-X.
"""
from __future__ import annotations

import importlib.util
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from xbench.atomic import hash_json
from xbench.errors import ConfigError, XbenchError

__all__ = [
    "Span", "ENT", "NUM", "RULES_VERSION", "MAX_SPAN_WORDS", "STOP_WORDS", "CONNECTORS", "SPACY_MODELS",
    "SpanFinder", "HeuristicSpanFinder", "SpacySpanFinder", "Backend", "AUTO_ORDER", "BACKENDS", "SPAN_FINDER_NAMES",
    "is_stop_word", "apply_filters", "spacy_problem", "char_span_to_words", "bio_spans", "resolve_span_finder",
    "span_f1", "span_f1_on_panx",
]

Span = tuple[int, int, str]  # (start word, end word exclusive, type)
ENT = "ENT"
NUM = "NUM"

# Part of every finder's fingerprint (cache keys): bump it whenever a rule, the stop-word list, the
# connectors or the filters change what a finder returns.
RULES_VERSION = 1
MAX_SPAN_WORDS = 10

# Built in rather than taken from NLTK (whose list needs a download) or spaCy (optional): the
# heuristic backend must work on a bare install, and its result must not depend on what else is
# installed. Lower case, compared case-insensitively. Left out on purpose: words that are also
# common names or months when capitalised ("will", "may", "don"), and the contraction fragments of
# NLTK's list ("t", "s", "ll"), which would make "T" in "AT & T" a stop word.
STOP_WORDS: frozenset[str] = frozenset("""
i me my myself we us our ours ourselves you your yours yourself yourselves he him his himself
she her hers herself it its itself they them their theirs themselves one
what which who whom whose this that these those
am is are was were be been being have has had having do does did doing
shall should would can could might must ought
a an the and but if or nor because as until while so than though although unless whether
of at by for with about against between into through during before after above below to from up
down in out on off over under upon within without across along among around behind towards per since
again further then once here there when where why how all any both each few more most other some
such no not only own same too very just now also ever never yet still even else either neither
every many much several another enough less
anyone everyone someone nobody none nothing something anything everything however already always often
""".split())

# Words that may stand inside a capitalised phrase, between two capitalised words ("Bank of
# England", "Rolls - Royce", "AT & T", "Pierre de la Fontaine"); compared case-insensitively so
# that title case ("Bank Of England") joins too.
CONNECTORS: frozenset[str] = frozenset({"of", "de", "la", "von", "van", "der", "du", "da", "-", "&"})

# A number-like token: digits with optional internal . , : / - and an optional trailing %. The
# pre-tokeniser splits punctuation off, so "3.14" arrives as "3", ".", "14"; whole tokens such as
# "3.14" or "50%" come from already tokenised corpora.
_NUMBER_TOKEN = re.compile(r"\d+(?:[.,:/-]\d+)*%?")
_NUMBER_JOINERS = frozenset({".", ",", ":", "/", "-"})
# Tokens that end a sentence inside a line ("Come on. Let's go."): the next word is sentence-initial.
_SENTENCE_END = frozenset({".", "!", "?", "…"})

# English spaCy model packages, in the order `auto` prefers them (the fastest first: CLISM runs the
# finder over every English side of the pretraining pairs).
SPACY_MODELS = ("en_core_web_sm", "en_core_web_md", "en_core_web_lg", "en_core_web_trf")


def _has_alnum(word: str) -> bool:
    return any(ch.isalnum() for ch in word)


def is_stop_word(word: str) -> bool:
    """Whether `word` is in the built-in stop-word list (case-insensitive).

    A word of two or more letters written all in capitals is an acronym, not a stop word: "US",
    "IT", "WHO" and the "AT" of "AT & T" are names. "I" and "A" stay stop words.
    """
    if len(word) >= 2 and word.isupper():
        return False
    return word.lower() in STOP_WORDS


def _is_capitalised(word: str) -> bool:
    return word[:1].isupper() and not is_stop_word(word)


def _initial_positions(words: Sequence[str]) -> set[int]:
    """Positions that start a sentence: the first word with a letter or digit, and the first such
    word after a sentence-ending . ! ? inside the line. Leading punctuation (a quote, a bullet) is
    skipped because the pre-tokeniser makes it a word of its own: in '" Hello , " he said' the
    capital of "Hello" says nothing about it being a name."""
    out: set[int] = set()
    at_start = True
    for i, w in enumerate(words):
        if _has_alnum(w):
            if at_start:
                out.add(i)
            at_start = False
        elif w in _SENTENCE_END:
            at_start = True
    return out


def apply_filters(spans: Iterable[Span], words: Sequence[str]) -> list[Span]:
    """The filters every backend's spans go through (paper App. B, and xbench's whole-sentence rule).

    Dropped: a span outside the sentence or empty (start < end within bounds is required); a span
    longer than MAX_SPAN_WORDS words; a span made only of stop words (a word without a letter or
    digit counts as one here, so "The ," goes too); a span that covers the whole sentence, where a
    word without a letter or digit outside the span does not count ("Tom ." has no span "Tom": the
    masked sentence would have no context left). Returns the kept spans sorted, duplicates removed.
    """
    n = len(words)
    content = [i for i, w in enumerate(words) if _has_alnum(w)]
    kept: set[Span] = set()
    for start, end, typ in spans:
        if not 0 <= start < end <= n:
            continue
        if end - start > MAX_SPAN_WORDS:
            continue
        if all(is_stop_word(w) or not _has_alnum(w) for w in words[start:end]):
            continue
        if content and start <= content[0] and content[-1] < end:
            continue
        kept.add((start, end, typ))
    return sorted(kept)


class SpanFinder(Protocol):
    """What CLISM needs of a backend."""

    name: str

    def find(self, words: Sequence[str]) -> list[Span]: ...

    def find_all(self, sentences: Sequence[Sequence[str]]) -> list[list[Span]]: ...

    def fingerprint(self) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- heuristic backend


class HeuristicSpanFinder:
    """Capitalised phrases (ENT) and numbers (NUM), see docs/methods/clism.md, "Span finder".

    Built from a corpus (word lists) because a sentence-initial capital says nothing: the first
    word of a phrase at a sentence start is kept only if the same form occurs capitalised at a
    non-initial position somewhere in the corpus.
    """

    name = "heuristic"

    def __init__(self, corpus_words: Iterable[Sequence[str]]) -> None:
        table: set[str] = set()
        for words in corpus_words:
            initial = _initial_positions(words)
            table.update(w for i, w in enumerate(words) if i not in initial and w[:1].isupper())
        self.capitalised_forms: frozenset[str] = frozenset(table)

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": self.name, "rules_version": RULES_VERSION,
                "stop_words": hash_json(sorted(STOP_WORDS))[:16],
                # The table is what the corpus contributes; two corpora with the same table give the same spans.
                "capitalised_forms": hash_json(sorted(self.capitalised_forms))[:16],
                "n_capitalised_forms": len(self.capitalised_forms)}

    def find(self, words: Sequence[str]) -> list[Span]:
        words = list(words)
        return apply_filters(self._entity_runs(words) + _number_runs(words), words)

    def find_all(self, sentences: Sequence[Sequence[str]]) -> list[list[Span]]:
        return [self.find(words) for words in sentences]

    def _entity_runs(self, words: list[str]) -> list[Span]:
        n = len(words)
        cap = [_is_capitalised(w) for w in words]
        conn = [not c and w.lower() in CONNECTORS for w, c in zip(words, cap)]
        initial = _initial_positions(words)
        spans: list[Span] = []
        i = 0
        while i < n:
            if not cap[i]:
                i += 1
                continue
            start, end = i, i + 1
            while True:  # extend over connectors, but only up to a further capitalised word
                k = end
                while k < n and conn[k]:
                    k += 1
                if k < n and cap[k]:
                    end = k + 1
                else:
                    break
            i = end
            if start in initial and words[start] not in self.capitalised_forms:
                start += 1
                while start < end and conn[start]:  # "Bank of England" → "England", never "of England"
                    start += 1
            if start < end:
                spans.append((start, end, ENT))
        return spans


def _number_runs(words: list[str]) -> list[Span]:
    """Maximal runs of number tokens joined by single . , : / - tokens, with an optional "%" token
    after the last one. A joiner counts only between two number tokens, so the "." of "at 5 ."
    stays out. Since the pre-tokeniser drops the spaces, "3, 4" and "3,4" look alike and both give
    one span."""
    n = len(words)
    spans: list[Span] = []
    i = 0
    while i < n:
        if not _NUMBER_TOKEN.fullmatch(words[i]):
            i += 1
            continue
        start, end = i, i + 1
        while (not words[end - 1].endswith("%") and end + 1 < n and words[end] in _NUMBER_JOINERS
               and _NUMBER_TOKEN.fullmatch(words[end + 1])):
            end += 2
        if not words[end - 1].endswith("%") and end < n and words[end] == "%":
            end += 1
        spans.append((start, end, NUM))
        i = end
    return spans


# --------------------------------------------------------------------------- spaCy backend


def spacy_problem(model: str | None = None) -> str | None:
    """Why the spaCy backend cannot be used here (None when it can), found without importing spaCy."""
    hint = ("install spaCy and an English spaCy model package yourself, e.g. `pip install spacy` then "
            "`python -m spacy download en_core_web_sm` (xbench never downloads models), or use "
            "span_finder=heuristic or auto")
    if not _importable("spacy"):
        return f"span finder 'spacy' needs the spaCy package, which is not installed: {hint}"
    wanted = [model] if model else list(SPACY_MODELS)
    if not any(_importable(m) for m in wanted):
        return (f"span finder 'spacy' needs an English spaCy model package ({' or '.join(wanted)}) and none is "
                f"installed: {hint}")
    return None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _word_offsets(words: Sequence[str]) -> tuple[str, list[int], list[int]]:
    """The text of `words` joined by single spaces, and each word's start and end character."""
    starts, ends, pos = [], [], 0
    for w in words:
        starts.append(pos)
        ends.append(pos + len(w))
        pos += len(w) + 1
    return " ".join(words), starts, ends


def char_span_to_words(starts: Sequence[int], ends: Sequence[int], start_char: int,
                       end_char: int) -> tuple[int, int] | None:
    """The words covering characters [start_char, end_char) of the joined text, snapped outward: an
    entity that begins or ends inside a word (spaCy split "U.S.-based" further than the words did)
    takes the whole word. None when the characters hold no word (only spaces)."""
    first = bisect_right(ends, start_char)   # the first word ending after start_char
    last = bisect_left(starts, end_char)     # words before this one start before end_char
    return (first, last) if first < last else None


class SpacySpanFinder:
    """spaCy NER over the words joined by spaces; entity characters are mapped back to words."""

    name = "spacy"

    def __init__(self, model: str | None = None) -> None:
        problem = spacy_problem(model)
        if problem:
            raise XbenchError(problem)
        import spacy  # optional and heavy: only when this backend is chosen

        self.model = model or next(m for m in SPACY_MODELS if _importable(m))
        nlp = spacy.load(self.model)
        if "ner" not in nlp.pipe_names:
            raise XbenchError(f"spaCy model {self.model} has no 'ner' component; the span finder needs an NER model")
        # Only NER is used; the other components cost time over a million sentences.
        nlp.select_pipes(disable=[p for p in nlp.pipe_names if p not in ("ner", "tok2vec", "transformer")])
        self._nlp = nlp
        self._versions = {"model_version": str(nlp.meta.get("version", "")), "spacy_version": spacy.__version__}

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": self.name, "rules_version": RULES_VERSION, "model": self.model, **self._versions}

    def find(self, words: Sequence[str]) -> list[Span]:
        return self.find_all([words])[0]

    def find_all(self, sentences: Sequence[Sequence[str]], batch_size: int = 256) -> list[list[Span]]:
        joined = [_word_offsets(list(words)) for words in sentences]
        out: list[list[Span]] = []
        for words, (_, starts, ends), doc in zip(sentences, joined,
                                                 self._nlp.pipe((text for text, _, _ in joined), batch_size=batch_size)):
            spans = []
            for ent in doc.ents:
                hit = char_span_to_words(starts, ends, ent.start_char, ent.end_char)
                if hit is not None:
                    spans.append((hit[0], hit[1], ent.label_))
            out.append(apply_filters(spans, list(words)))
        return out


# --------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class Backend:
    """A span-finder backend: why it cannot be used here (None when it can), and how to build it."""

    name: str
    problem: Callable[[], str | None]
    build: Callable[[Sequence[Sequence[str]]], SpanFinder]


BACKENDS: dict[str, Backend] = {
    "spacy": Backend("spacy", spacy_problem, lambda corpus: SpacySpanFinder()),
    "heuristic": Backend("heuristic", lambda: None, HeuristicSpanFinder),
}
# What `auto` tries here, most faithful to the paper first; the heuristic is always available, so it
# closes the list. The `panx` tagger (xbench/stages/tagger.py) is trained from a source model, which
# this floor does not know: CLISM's method puts it between spacy and heuristic.
AUTO_ORDER: tuple[str, ...] = ("spacy", "heuristic")
SPAN_FINDER_NAMES: tuple[str, ...] = ("auto", *BACKENDS)


def resolve_span_finder(name: str, corpus_words: Sequence[Sequence[str]]) -> SpanFinder:
    """The finder `name` names (`auto`, `heuristic`, `spacy`); `auto` takes the first usable backend
    of AUTO_ORDER. `corpus_words` (the English sides, as word lists) builds the heuristic's table of
    capitalised forms; other backends ignore it. The finder's `.name` is the backend actually used.
    """
    if name == "auto":
        for backend in AUTO_ORDER:
            if BACKENDS[backend].problem() is None:
                return BACKENDS[backend].build(corpus_words)
        raise AssertionError("AUTO_ORDER must end with a backend that is always available")
    if name not in BACKENDS:
        raise ConfigError(f"unknown span finder '{name}'; valid: {', '.join(SPAN_FINDER_NAMES)}")
    problem = BACKENDS[name].problem()
    if problem:
        raise XbenchError(problem)
    return BACKENDS[name].build(corpus_words)


# --------------------------------------------------------------------------- quality check


def bio_spans(tags: Sequence[str]) -> list[Span]:
    """Entity spans of IOB2 tags, read as conlleval does: an I-X after O or after another type
    starts a new entity."""
    spans: list[Span] = []
    start, typ = -1, ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        if prefix == "I" and start >= 0 and label == typ:
            continue
        if start >= 0:
            spans.append((start, i, typ))
            start, typ = -1, ""
        if prefix in ("B", "I"):
            start, typ = i, label
    return spans


def span_f1(finder: SpanFinder, sentences: Sequence[tuple[Sequence[str], Sequence[str]]]) -> dict[str, Any]:
    """Untyped span precision, recall and F1 of `finder` on (tokens, IOB2 tags) sentences: a
    predicted span is correct when its start and end are those of a gold entity, whatever the
    types. The heuristic's NUM spans are false positives here by design (PAN-X tags no numbers)."""
    predicted = finder.find_all([list(tokens) for tokens, _ in sentences])
    n_gold = n_pred = n_correct = 0
    for (_, tags), pred in zip(sentences, predicted):
        gold = {(s, e) for s, e, _ in bio_spans(tags)}
        pred_bounds = {(s, e) for s, e, _ in pred}
        n_gold += len(gold)
        n_pred += len(pred_bounds)
        n_correct += len(gold & pred_bounds)
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_sentences": len(sentences), "n_gold": n_gold,
            "n_pred": n_pred, "n_correct": n_correct}


def span_f1_on_panx(finder: SpanFinder, data_dir: str | Path | None = None) -> dict[str, Any]:
    """`span_f1` of `finder` on PAN-X en dev, read from the data roots (`data_dir`, then XBENCH_DATA)
    at the panx task card's local layouts; the result also names the file read (`data`).

    Local files only: this is a cheap check written to the run record, and the hub path belongs to
    the PAN-X task type. Raises DataNotFoundError (what was looked for) when no root holds the file.
    """
    from xbench.cards import get_task  # the card says where PAN-X files live under a data root
    from xbench.data.panx import read_panx
    from xbench.data.resolve import local_then_hub, no_hub
    from xbench.data.sources import without_roots
    from xbench.data.textfiles import memoised

    rels = [pattern.format(split="dev", lang="en") for pattern in get_task("panx").data.get("local", [])]
    sentences, prov = local_then_hub(
        rels, lambda _, path: memoised(read_panx, path, require_labels=True),
        no_hub("the span finder's quality check reads local PAN-X files only"), data_dir=data_dir,
        what="the span finder's quality check (PAN-X en dev)", local_hint=" or ".join(rels), hub_hint=None)
    return {**span_f1(finder, sentences), "data": without_roots(prov.to_dict())}
