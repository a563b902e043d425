"""The word-aligner interface: sentence pairs of words in, links per pair out.

A backend aligns all pairs of a language pair in one call (a statistical aligner learns from all
of them) and hands the links back per pair: `forward` (source → target model), `reverse` and the
symmetrised set. A link (i, j) joins source word i and target word j, both 0-based.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from xbench.errors import XbenchError

Link = tuple[int, int]
WordPairs = Sequence[tuple[Sequence[str], Sequence[str]]]


def word_pairs(pairs: WordPairs) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The pairs as tuples of words, refusing a side given as one string: a str is a sequence of
    characters, so a raw sentence passed by mistake would be aligned letter by letter."""
    out = []
    for n, pair in enumerate(pairs):
        if len(pair) != 2:
            raise XbenchError(f"aligner input: pair {n} has {len(pair)} sides, not 2 (source words, target words)")
        sides = []
        for side in pair:
            if isinstance(side, str) or not all(isinstance(w, str) for w in side):
                raise XbenchError(f"aligner input: pair {n} must be two lists of words (strings), got {side!r:.80}")
            sides.append(tuple(side))
        out.append((sides[0], sides[1]))
    return out


@dataclass(frozen=True)
class AlignmentSet:
    """The links of one sentence pair, in the three directions a backend reports."""

    forward: tuple[Link, ...]
    reverse: tuple[Link, ...]
    symmetric: tuple[Link, ...]

    def check(self, n_src: int, n_tgt: int) -> None:
        """Raise if a link points outside the pair's words: a backend that shifted an index (1-based
        output, a dropped empty word) would otherwise silently misalign every span."""
        for name in ("forward", "reverse", "symmetric"):
            bad = [(i, j) for i, j in getattr(self, name) if not (0 <= i < n_src and 0 <= j < n_tgt)]
            if bad:
                raise XbenchError(f"aligner output: {name} links {bad[:5]} lie outside a pair of {n_src} source and "
                                  f"{n_tgt} target words")


@runtime_checkable
class WordAligner(Protocol):
    """What every aligner backend provides."""

    name: str

    def align(self, pairs: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[AlignmentSet]:
        """One AlignmentSet per pair, in input order."""
        ...

    def fingerprint(self) -> dict[str, object]:
        """The backend and its settings, for the alignment cache key and the result's provenance."""
        ...
