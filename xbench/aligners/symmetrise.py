"""Symmetrisation: one link set per pair from a forward and a reverse alignment.

A statistical aligner run in one direction can link a word on the generated side to at most one
word on the other side, so each direction alone misses one-to-many links; the two directions are
combined here. All three methods are pure functions of the two link sets, and every result is a
sorted tuple, so that equal inputs give byte-identical cache entries and records.

`intersection`
    Links found in both directions: high precision, low recall.
`union`
    Links found in either direction: high recall, low precision.
`grow-diag-final-and` (xbench default; Koehn, Och and Marcu 2003 and Koehn et al. 2005, the
default of Moses' `train-model.perl`, with pseudo-code in chapter 4 of Koehn's textbook
"Statistical Machine Translation")
    1. Start from the intersection A.
    2. GROW-DIAG: sweep the grid of (source i, target j) in ascending order of i, then j. For each
       point (i, j) in A, look at its eight neighbours in the order (-1, 0), (0, -1), (1, 0),
       (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1); add a neighbour (i', j') to A when it is in the
       union and i' or j' is not yet aligned by A. A point added during a sweep is seen at once
       (later in the same sweep if it lies after the current point, otherwise in the next sweep).
       Sweeps repeat until one adds nothing.
    3. FINAL-AND, first with the forward links, then with the reverse links: go through the links
       of that direction in ascending (i, j) order and add (i, j) to A when neither i nor j is
       aligned by A yet (the "-and": plain "final" would need only one of them unaligned).

The sweep order is spelled out because growing is order dependent: which of two competing
neighbours gets in first decides whether the other still may. It follows Koehn's pseudo-code as
NLTK's `grow_diag_final_and` and most re-implementations do.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable

from xbench.aligners.base import Link
from xbench.errors import XbenchError

GROW_DIAG_FINAL_AND = "grow-diag-final-and"
INTERSECTION = "intersection"
UNION = "union"
METHODS = (GROW_DIAG_FINAL_AND, INTERSECTION, UNION)
DEFAULT = GROW_DIAG_FINAL_AND

_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def intersection(forward: Iterable[Link], reverse: Iterable[Link]) -> tuple[Link, ...]:
    return tuple(sorted(set(forward) & set(reverse)))


def union(forward: Iterable[Link], reverse: Iterable[Link]) -> tuple[Link, ...]:
    return tuple(sorted(set(forward) | set(reverse)))


def grow_diag_final_and(forward: Iterable[Link], reverse: Iterable[Link]) -> tuple[Link, ...]:
    """The module docstring's definition, step by step."""
    fwd, rev = set(forward), set(reverse)
    both = fwd | rev
    links = fwd & rev
    src_aligned = {i for i, _ in links}
    tgt_aligned = {j for _, j in links}

    def add(point: Link) -> None:
        links.add(point)
        src_aligned.add(point[0])
        tgt_aligned.add(point[1])

    # A sweep over the whole grid only ever acts at points of A, so it is run as a heap of A's
    # points in grid order: a point added ahead of the sweep position joins the heap (the grid scan
    # would reach it in this sweep), one added behind it waits for the next sweep.
    added = True
    while added:
        added = False
        heap = sorted(links)
        while heap:
            here = heapq.heappop(heap)
            i, j = here
            for di, dj in _NEIGHBOURS:
                new = (i + di, j + dj)
                if new in both and new not in links and (new[0] not in src_aligned or new[1] not in tgt_aligned):
                    add(new)
                    added = True
                    if new > here:
                        heapq.heappush(heap, new)
    for direction in (fwd, rev):
        for i, j in sorted(direction):
            if i not in src_aligned and j not in tgt_aligned:
                add((i, j))
    return tuple(sorted(links))


_BY_NAME = {GROW_DIAG_FINAL_AND: grow_diag_final_and, INTERSECTION: intersection, UNION: union}


def check_method(method: str) -> str:
    if method not in _BY_NAME:
        raise XbenchError(f"unknown symmetrisation {method!r}; valid: {', '.join(METHODS)}")
    return method


def symmetrise(forward: Iterable[Link], reverse: Iterable[Link], method: str = DEFAULT) -> tuple[Link, ...]:
    """The symmetric link set of one pair by `method` (one of METHODS), sorted."""
    return _BY_NAME[check_method(method)](forward, reverse)
