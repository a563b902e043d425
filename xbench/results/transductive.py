"""Transductive flags: which evaluation data an encoder's pretraining text contained.

An encoder's flags list entries "<task>:<lang>" (the task whose evaluation text, in that language,
was in a pretraining pool: "xquad:en" for the XQuAD English contexts of tiny-en-bert's pool). A
result keeps only the entries of the task it evaluates, for the languages it evaluates: XQuAD
contexts in the pool say nothing about an XNLI or UD score, and an XQuAD run of de alone did not
score the en contexts the encoder saw.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def pool_entries(manifest: dict[str, Any] | None) -> list[str]:
    """The entries of one pool manifest (data/pools.py: `lang` and the `transductive` sources)."""
    if not isinstance(manifest, dict):
        return []
    lang = manifest.get("lang")
    return sorted({f"{task}:{lang}" if lang else str(task) for task in manifest.get("transductive") or []})


def for_result(entries: Iterable[str], task: str, units: Iterable[str]) -> list[str]:
    """The entries that concern a result on `task` evaluating `units` (languages or MLQA cells)."""
    from xbench.results.averages import unit_languages

    langs = set().union(*(unit_languages(u) for u in units))
    out = set()
    for e in entries:
        name, _, lang = e.partition(":")
        if name == task and (not lang or lang in langs):
            out.add(e)
    return sorted(out)


def row_flag(task: str, entries: Iterable[str]) -> str | None:
    """The leaderboard flag of a row on `task`; entries of other tasks (files written before results
    kept only their own) are left out, and bare task names (no language recorded) stay bare."""
    langs: set[str] = set()
    hit = False
    for e in entries:
        name, _, lang = e.partition(":")
        if name == task:
            hit = True
            if lang:
                langs.add(lang)
    if not hit:
        return None
    return f"transductive: {task}" + (f" ({', '.join(sorted(langs))})" if langs else "")
