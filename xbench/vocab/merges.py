"""The greedy merge loop shared by xbench's deterministic vocabulary learners (wordpiece.py, bpe.py).

Repeatedly merge the most frequent adjacent pair of symbols; ties go to the smallest (left, right)
strings, so the result depends on the counts alone, never on hash or visiting order. Pair counts
are updated incrementally, so a merge costs time in proportion to the words it touches.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterator


def greedy_merges(words: list[list[str]], counts: list[int], join: Callable[[str, str], str], *,
                  min_frequency: int = 2) -> Iterator[tuple[str, str, str]]:
    """Yield (left, right, merged) in merge order until no pair occurs `min_frequency` times.

    `words` (each a list of symbols, with its count in `counts`) are rewritten in place; the caller
    stops iterating once it has enough merges.
    """
    pair_counts: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, syms in enumerate(words):
        for pair in zip(syms, syms[1:]):
            pair_counts[pair] += counts[i]
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)
    while heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg:  # stale: the count changed since this entry was pushed
            continue
        if -neg < min_frequency:
            return
        left, right = pair
        merged = join(left, right)
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            syms, cnt = words[i], counts[i]
            out: list[str] = []
            j = 0
            while j < len(syms):
                if j + 1 < len(syms) and syms[j] == left and syms[j + 1] == right:
                    out.append(merged)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            if len(out) == len(syms):
                continue
            for p in zip(syms, syms[1:]):
                pair_counts[p] -= cnt
                changed.add(p)
            for p in zip(out, out[1:]):
                pair_counts[p] += cnt
                where[p].add(i)
                changed.add(p)
            words[i] = out
        pair_counts.pop(pair, None)
        for p in changed:
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_counts.pop(p, None)
        yield left, right, merged
