"""The toy bilingual world (xbench spec §12), for unit tests only: never in a profile or a leaderboard.

A source language from a small grammar (determiners, adjectives, nouns, verbs, person names and
numbers) and a target language made from it by a word-level cipher (names and numbers kept as they
are, so the vocabularies overlap) and two reordering rules: the adjective follows its noun and the
verb goes last. Every pair comes with its exact word alignment. Deterministic for a seed;
milliseconds to generate.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

NOUNS = [f"noun{i}" for i in range(60)]
ADJECTIVES = [f"adj{i}" for i in range(40)]
VERBS = [f"verb{i}" for i in range(40)]
NAMES = ["Anna", "Ben", "Clara", "David", "Eva", "Felix", "Greta", "Hugo", "Ida", "Jonas"]
NUMBERS = [str(n) for n in range(2, 20)]
DETERMINERS = ["the", "a", "every", "no"]


def cipher(word: str) -> str:
    """The target spelling of a source word; names and numbers are spelt the same in both languages."""
    if word in NAMES or word.isdigit():
        return word
    return "q" + word[::-1]


@dataclass
class ToyPair:
    source: list[str]
    target: list[str]
    alignment: list[tuple[int, int]]  # (source index, target index), one link per word

    @property
    def texts(self) -> tuple[str, str]:
        return " ".join(self.source), " ".join(self.target)


def _sentence(rng: random.Random) -> list[tuple[str, str]]:
    """(word, role) in source order: NAME VERB [NUMBER] DET ADJ NOUN."""
    words = [(rng.choice(NAMES), "name"), (rng.choice(VERBS), "verb")]
    if rng.random() < 0.3:
        words.append((rng.choice(NUMBERS), "number"))
    words += [(rng.choice(DETERMINERS), "det"), (rng.choice(ADJECTIVES), "adj"), (rng.choice(NOUNS), "noun")]
    return words


def toy_pairs(n: int, seed: int = 0) -> list[ToyPair]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        src = _sentence(rng)
        order = list(range(len(src)))
        roles = [r for _, r in src]
        adj, noun = roles.index("adj"), roles.index("noun")
        order[adj], order[noun] = order[noun], order[adj]  # the adjective after its noun
        verb = roles.index("verb")
        order = [i for i in order if i != verb] + [verb]  # verb-final
        target = [cipher(src[i][0]) for i in order]
        out.append(ToyPair([w for w, _ in src], target, sorted((i, j) for j, i in enumerate(order))))
    return out
