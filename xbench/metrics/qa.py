"""Exact match and token F1 for extractive QA, under two answer-normalisation schemes.

* ``"mlqa"``: the rules of MLQA's official evaluation (v1), which normalise by the language of
  the context (and so of the answer): Unicode punctuation, per-language articles, and mixed
  character/whitespace segmentation for Chinese.
* ``"squad"``: the SQuAD v1.1 rules (ASCII punctuation, English articles, whitespace tokens),
  which XTREME applies to every language of XQuAD and TyDiQA-GoldP. ``lang`` is ignored.
"""
from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence

from xbench.errors import XbenchError

SCHEMES = ("mlqa", "squad")

_ASCII_PUNCT = frozenset(string.punctuation)

# MLQA removes these as whole words (\b is Unicode-aware for str patterns, so "Derrick" keeps its
# "der"). Arabic is not here: see _remove_articles.
_ARTICLES = {
    "en": ("a", "an", "the"),
    "es": ("un", "una", "unos", "unas", "el", "la", "los", "las"),
    "de": ("ein", "eine", "einen", "einem", "eines", "einer", "der", "die", "das", "den", "dem", "des"),
    "vi": ("của", "là", "cái", "chiếc", "những"),
}
_ARTICLE_RES = {lang: re.compile(r"\b(" + "|".join(words) + r")\b") for lang, words in _ARTICLES.items()}
_SQUAD_ARTICLE_RE = _ARTICLE_RES["en"]
MLQA_LANGS = ("en", "es", "de", "vi", "ar", "hi", "zh")

# The official script's character class for "CJK character". It stops at U+9FA5, so later
# additions to the CJK Unified Ideographs block and Extension A stay in whitespace runs; we keep
# that range so that scores match the official script.
_CJK_RE = re.compile("[\u4e00-\u9fa5]")


def _is_punct(ch: str) -> bool:
    # ASCII punctuation is added because characters such as $ + < = > ^ ` | ~ are Unicode
    # symbols (S*), not punctuation (P*), yet the official scripts remove them.
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def _remove_articles(text: str, lang: str) -> str:
    if lang == "ar":
        # The official regex is '\sال^|ال': its first branch can never match ('^' after
        # characters), so in effect every "ال" is replaced, also inside words ("بالكتاب" ->
        # "ب كتاب"). That over-deletes, but it is what published MLQA numbers use.
        return text.replace("ال", " ")
    article_re = _ARTICLE_RES.get(lang)
    return article_re.sub(" ", text) if article_re else text


def _mixed_segmentation(text: str) -> list[str]:
    """Every CJK and punctuation character is a token; the runs between are split on whitespace."""
    out: list[str] = []
    run: list[str] = []
    for ch in text:
        if _CJK_RE.match(ch) or _is_punct(ch):
            out.extend("".join(run).split())
            run = []
            out.append(ch)
        else:
            run.append(ch)
    out.extend("".join(run).split())
    return out


def _check_scheme(lang: str, scheme: str) -> None:
    if scheme not in SCHEMES:
        raise XbenchError(f"unknown QA normalisation scheme '{scheme}'; valid: {', '.join(SCHEMES)}")
    if scheme == "mlqa" and lang not in MLQA_LANGS:
        raise XbenchError(
            f"the MLQA answer normaliser has no rules for language '{lang}'; "
            f"it defines {', '.join(MLQA_LANGS)} (use scheme 'squad' for other languages)"
        )


def tokens(text: str, lang: str, scheme: str) -> list[str]:
    """Normalised answer tokens of ``text`` (the unit of token F1)."""
    _check_scheme(lang, scheme)
    text = text.lower()
    if scheme == "squad":
        text = "".join(ch for ch in text if ch not in _ASCII_PUNCT)
        return _SQUAD_ARTICLE_RE.sub(" ", text).split()
    text = "".join(ch for ch in text if not _is_punct(ch))
    text = _remove_articles(text, lang)
    return _mixed_segmentation(text) if lang == "zh" else text.split()


def normalize_answer(text: str, lang: str, scheme: str) -> str:
    """The normalised answer string that exact match compares."""
    return " ".join(tokens(text, lang, scheme))


def exact_match(pred: str, golds: Sequence[str], lang: str, scheme: str) -> float:
    """1.0 if ``pred`` equals any gold answer after normalisation, else 0.0."""
    norm_pred = normalize_answer(pred, lang, scheme)
    return max(float(norm_pred == normalize_answer(g, lang, scheme)) for g in golds)


def _f1_one(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1(pred: str, golds: Sequence[str], lang: str, scheme: str) -> float:
    """Bag-of-tokens F1 between ``pred`` and the best-matching gold answer."""
    pred_tokens = tokens(pred, lang, scheme)
    return max(_f1_one(pred_tokens, tokens(g, lang, scheme)) for g in golds)


def _scorable_golds(gold: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    if not gold:
        raise XbenchError("no gold questions to score against")
    # A blank gold string would give an empty prediction exact-match credit, so blanks never count.
    kept = {qid: [a for a in answers if a.strip()] for qid, answers in gold.items()}
    blank = [qid for qid, answers in kept.items() if not answers]
    if len(blank) == len(kept):
        raise XbenchError(
            "the file has no gold answers (every answer is blank) and cannot be scored; "
            "use it for predictions only"
        )
    if blank:
        raise XbenchError(
            f"{len(blank)} of {len(kept)} gold questions have no non-empty answer "
            f"(first: '{blank[0]}'); they cannot be scored"
        )
    return kept


def score_qa(
    predictions: Mapping[str, str], gold: Mapping[str, Sequence[str]], lang: str, scheme: str
) -> dict[str, float | int]:
    """EM and F1 as mean x 100 over all gold questions; a question without a prediction scores 0.

    Predictions for ids that are not in ``gold`` are refused: they mean the predictions were
    made for another file.
    """
    _check_scheme(lang, scheme)
    golds = _scorable_golds(gold)
    unknown = [qid for qid in predictions if qid not in golds]
    if unknown:
        raise XbenchError(
            f"{len(unknown)} predictions are for question ids that are not in the gold data "
            f"(first: '{unknown[0]}'); were they made for another file?"
        )
    em_sum = f1_sum = 0.0
    for qid, answers in golds.items():
        if qid in predictions:
            em_sum += exact_match(predictions[qid], answers, lang, scheme)
            f1_sum += f1(predictions[qid], answers, lang, scheme)
    n = len(golds)
    return {"exact_match": 100.0 * em_sum / n, "f1": 100.0 * f1_sum / n, "n": n}
