"""Tree decoders against brute force over every single-root tree."""
from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import pytest

from xbench.models.heads.mst import chu_liu_edmonds, eisner, is_tree


def _is_projective(heads: tuple[int, ...]) -> bool:
    arcs = [(min(h, d), max(h, d)) for d, h in enumerate(heads, start=1)]
    for (a, b), (c, d) in itertools.combinations(arcs, 2):
        if a < c < b < d or c < a < d < b:
            return False
    return True


@lru_cache(maxsize=None)
def _all_trees(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every single-root tree over n words (as a [T, n] array) and a projectivity mask."""
    trees = [
        h for h in itertools.product(range(n + 1), repeat=n)
        if is_tree(h)
    ]
    proj = np.array([_is_projective(h) for h in trees])
    return np.array(trees, dtype=np.int64), proj


def _total(scores: np.ndarray, heads: np.ndarray) -> np.ndarray:
    n = heads.shape[-1]
    return scores[np.arange(1, n + 1), heads].sum(axis=-1)


def test_is_tree_rejects_bad_structures() -> None:
    assert is_tree([0])
    assert is_tree([2, 0, 2])
    assert not is_tree([0, 0])            # two roots
    assert is_tree([0, 0], single_root=False)
    assert not is_tree([2, 1, 0])         # 1 <-> 2 cycle
    assert not is_tree([1])               # self loop
    assert not is_tree([0, 3])            # head out of range
    assert not is_tree([])


def test_known_tree_counts() -> None:
    # Single-root trees over n words: n^(n-1) (ROOT's child r, then a spanning tree rooted at r).
    for n in range(1, 6):
        trees, proj = _all_trees(n)
        assert len(trees) == n ** (n - 1)
    # Projective single-root trees over n words: Catalan-like sequence 1, 2, 7, 30, 143.
    assert [int(_all_trees(n)[1].sum()) for n in range(1, 6)] == [1, 2, 7, 30, 143]


def test_decoders_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(240):
        n = int(rng.integers(1, 9))
        # Mix of dense Gaussian scores and log-softmax scores with a strong ROOT preference, so
        # that the unconstrained optimum often has several ROOT children.
        scores = rng.normal(size=(n + 1, n + 1))
        if trial % 2:
            scores[:, 0] += 3.0
            scores = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
        cle = chu_liu_edmonds(scores)
        eis = eisner(scores)
        assert cle.shape == (n,) and eis.shape == (n,)
        assert is_tree(cle), (scores, cle)
        assert is_tree(eis), (scores, eis)
        assert _is_projective(tuple(eis))
        if n <= 6:
            trees, proj = _all_trees(n)
            totals = _total(scores, trees)
            assert _total(scores, cle) == pytest.approx(totals.max(), abs=1e-9)
            assert _total(scores, eis) == pytest.approx(totals[proj].max(), abs=1e-9)
            checked += 1
    assert checked >= 150


def test_single_root_constraint_changes_the_answer() -> None:
    # Every word prefers ROOT; the best unconstrained graph would hang all three from ROOT.
    s = np.full((4, 4), -5.0)
    s[1:, 0] = 0.0
    s[2, 1] = -1.0
    s[3, 2] = -1.0
    s[3, 1] = -3.0
    cle = chu_liu_edmonds(s)
    assert (cle == 0).sum() == 1
    assert list(cle) == [0, 1, 2]
    assert list(eisner(s)) == [0, 1, 2]


def test_non_projective_optimum() -> None:
    # Crossing arcs 1->3 and 2->4 score highest; CLE finds them, Eisner cannot.
    s = np.full((5, 5), -10.0)
    s[1, 0] = 0.0
    s[3, 1] = 0.0
    s[2, 3] = 0.0
    s[4, 2] = 0.0
    cle = chu_liu_edmonds(s)
    assert list(cle) == [0, 3, 1, 2]
    eis = eisner(s)
    assert is_tree(eis) and _total(s, eis) < _total(s, cle)


def test_rejects_bad_scores() -> None:
    with pytest.raises(ValueError):
        chu_liu_edmonds(np.zeros((3, 4)))
    bad = np.zeros((3, 3))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError):
        eisner(bad)
