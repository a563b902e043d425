"""What makes a CoNLL-U HEAD column a tree: read by the CoNLL-U checks (data/conllu_io.py) and by the
tree decoders (models/heads/mst.py). `heads[i]` is the head of word i + 1; 0 is ROOT."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def find_cycle(heads: Sequence[int]) -> list[int] | None:
    """The words (1-based) of a cycle in a HEAD column whose values lie in 0..n, or None."""
    n = len(heads)
    # 0 = unvisited, 1 = on the current path, 2 = known to reach ROOT
    state = [0] * (n + 1)
    state[0] = 2
    for start in range(1, n + 1):
        path = []
        node = start
        while state[node] == 0:
            state[node] = 1
            path.append(node)
            node = int(heads[node - 1])
        if state[node] == 1:
            return path[path.index(node):]
        for p in path:
            state[p] = 2
    return None


def is_tree(heads: Sequence[int] | np.ndarray, single_root: bool = True) -> bool:
    """True if ``heads`` (CoNLL-U HEAD column, 0 = ROOT) forms a tree over its words.

    Every head must lie in ``0..n``, no word may head itself, every word must reach ROOT without
    a cycle, and with ``single_root`` exactly one word hangs from ROOT.
    """
    h = np.asarray(heads, dtype=np.int64)
    if h.ndim != 1 or h.shape[0] == 0:
        return False
    n = h.shape[0]
    if h.min() < 0 or h.max() > n or np.any(h == np.arange(1, n + 1)):
        return False
    if single_root and int((h == 0).sum()) != 1:
        return False
    return find_cycle(h.tolist()) is None
