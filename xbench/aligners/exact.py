"""The `exact` backend: hands back gold links, for unit tests on the toy bilingual world.

Tests of record building and span projection (TreLM's CdLM records, CLISM's answer spans) need to
know the right answer, which no statistical aligner gives. The toy bilingual world (a seeded
generator of parallel pairs: a small grammar, a word-level cipher with reordering rules) emits its
pairs together with their exact word alignment; this backend returns that alignment as forward,
reverse and symmetric links, so that code written against the WordAligner interface can be tested
without eflomal. It is never a choice for real data: a pair it was not given is an error, not a
guess.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from xbench.aligners.base import AlignmentSet, Link, WordPairs, word_pairs
from xbench.atomic import hash_json
from xbench.errors import XbenchError

Pair = tuple[tuple[str, ...], tuple[str, ...]]


class ExactAligner:
    """Gold links per sentence pair, looked up by the pair's exact words (case kept)."""

    name = "exact"

    def __init__(self, gold: Mapping[tuple[Sequence[str], Sequence[str]], Iterable[Link]]) -> None:
        self._gold: dict[Pair, tuple[Link, ...]] = {}
        for (src, tgt), links in gold.items():
            key = (tuple(src), tuple(tgt))
            fixed = tuple(sorted({(int(i), int(j)) for i, j in links}))
            AlignmentSet(fixed, fixed, fixed).check(len(key[0]), len(key[1]))
            if key in self._gold and self._gold[key] != fixed:
                raise XbenchError(f"exact aligner: the pair {key!r:.80} is given twice with different links")
            self._gold[key] = fixed

    @classmethod
    def from_examples(cls, examples: Iterable[tuple[Sequence[str], Sequence[str], Iterable[Link]]]) -> ExactAligner:
        """From (source words, target words, links) triples, the form a generator emits."""
        return cls({(tuple(s), tuple(t)): list(links) for s, t, links in examples})

    @classmethod
    def from_lexicon(cls, pairs: WordPairs, lexicon: Mapping[str, str]) -> ExactAligner:
        """Gold links of a word-for-word cipher (the toy world's target language): source word i
        links to target word j when the lexicon spells i as j. A word repeated in a sentence links
        its k-th occurrence to the k-th occurrence of its translation, which is exact for a cipher
        plus reordering rules as long as the rules never swap two copies of the same word."""
        gold: dict[Pair, list[Link]] = {}
        for src, tgt in word_pairs(pairs):
            positions: dict[str, list[int]] = {}
            for j, w in enumerate(tgt):
                positions.setdefault(w, []).append(j)
            used: dict[str, int] = {}
            links = []
            for i, w in enumerate(src):
                t = lexicon.get(w)
                if t is None or used.get(t, 0) >= len(positions.get(t, ())):
                    continue
                links.append((i, positions[t][used.get(t, 0)]))
                used[t] = used.get(t, 0) + 1
            gold[(src, tgt)] = links
        return cls(gold)

    def align(self, pairs: WordPairs) -> list[AlignmentSet]:
        out = []
        for n, pair in enumerate(word_pairs(pairs)):
            links = self._gold.get(pair)
            if links is None:
                raise XbenchError(f"exact aligner: pair {n} ({' '.join(pair[0])!r:.60} / {' '.join(pair[1])!r:.60}) "
                                  f"has no gold links; it only knows the {len(self._gold)} pairs it was built with")
            # Gold links are already symmetric: every symmetrisation of (G, G) is G.
            out.append(AlignmentSet(links, links, links))
        return out

    def fingerprint(self) -> dict[str, object]:
        gold = sorted([list(s), list(t), [list(link) for link in links]] for (s, t), links in self._gold.items())
        return {"backend": self.name, "gold_sha256": hash_json(gold), "n_gold_pairs": len(gold)}
