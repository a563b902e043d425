"""The averages a result reports, defined once: the run (a result file's `scores.average` and
`scores.averages`), the leaderboard and the regression check all call this module, so one run
cannot show three different averages under one name.

* **XLT mean** (`xlt`): the mean over the diagonal units, where context and question (or the whole
  example) are in one target language: every XNLI, PAN-X, UD, XQuAD and TyDiQA column, and the
  plain-language columns of an MLQA run.
* **G-XLT mean** (`gxlt`): the mean over the off-diagonal cells of an MLQA G-XLT run
  (``c=de,q=en``: context language ≠ question language), as the MLQA paper defines G-XLT.
* **card average** (`card`): the headline number (`scores.average`, the leaderboard's Δ): the
  G-XLT mean where there are off-diagonal cells, else the XLT mean.

All three leave out the units that involve a language of the card's `average_excludes` (XQuAD's
later ro), unless nothing else was evaluated (``xquad --langs ro`` averages ro: there is nothing
else, and `average_units` in the result says so).
"""
from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence


LABELS = {"xlt": "XLT mean", "gxlt": "G-XLT mean", "card": "card average"}

# A unit id names what one score column covers: a language, or an MLQA G-XLT cell "c=<context>,q=<question>".
_CELL_RE = re.compile(r"^c=([^,=]+),q=([^,=]+)$")


def unit_name(context: str, question: str) -> str:
    """The unit id of a (context language, question language) pair."""
    return context if context == question else f"c={context},q={question}"


def parse_unit(unit: str) -> tuple[str, str]:
    """(context language, question language) of a unit id; a plain language is a diagonal cell."""
    m = _CELL_RE.match(unit)
    return (m.group(1), m.group(2)) if m else (unit, unit)


def is_diagonal(unit: str) -> bool:
    context, question = parse_unit(unit)
    return context == question


def unit_languages(unit: str) -> set[str]:
    return set(parse_unit(unit))


def unit_sets(units: Sequence[str], excludes: Iterable[str] = ()) -> dict[str, list[str]]:
    """The units each average is taken over: keys `xlt`, `gxlt` (only where there are off-diagonal
    cells) and `card`; empty when `units` is."""
    excluded = set(excludes)
    kept = [u for u in units if not unit_languages(u) & excluded] or list(units)
    sets: dict[str, list[str]] = {}
    diagonal = [u for u in kept if is_diagonal(u)]
    off = [u for u in kept if not is_diagonal(u)]
    if diagonal:
        sets["xlt"] = diagonal
    if off:
        sets["gxlt"] = off
    if sets:
        sets["card"] = off or diagonal
    return sets


def named_averages(values: Mapping[str, float], sets: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Each average of `sets` whose units all have a value (a partial average would be a different number)."""
    return {name: statistics.fmean(values[u] for u in units) for name, units in sets.items()
            if units and all(u in values for u in units)}


def infer_excludes(units: Sequence[str], averaged_over: Sequence[str]) -> list[str]:
    """The excluded languages of a result written before `average_excludes` was recorded: those that
    occur in an evaluated unit but in no averaged one (schema-2 files averaged without them)."""
    seen = set().union(*(unit_languages(u) for u in averaged_over)) if averaged_over else set()
    return sorted(set().union(*(unit_languages(u) for u in units)) - seen) if units and seen else []
