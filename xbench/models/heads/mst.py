"""Decoding dependency trees from arc scores.

Conventions shared by every function here (and by :mod:`xbench.models.heads.biaffine`):

- ``scores`` is a square array of shape ``[n+1, n+1]`` indexed **``scores[dependent, head]``**;
  index 0 is the artificial ROOT. This is the layout a biaffine scorer produces (one row of
  head scores per dependent, normalised over the last axis). Row 0 and the diagonal are ignored.
- ``heads`` is the CoNLL-U HEAD column: an integer array of length ``n`` where ``heads[i]`` is the
  head of word ``i + 1`` and 0 means ROOT.

Both decoders return well-formed trees in which **exactly one** word is attached to ROOT, which is
what UD requires and what the CoNLL 2018 scorer checks.
"""
from __future__ import annotations

import numpy as np

from xbench.data.trees import find_cycle, is_tree

__all__ = ["chu_liu_edmonds", "eisner", "find_cycle", "is_tree"]


def _check_scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] < 2:
        raise ValueError(f"scores must be a square [n+1, n+1] array with n >= 1, got shape {s.shape}")
    n1 = s.shape[0]
    off_diagonal = ~np.eye(n1, dtype=bool)
    off_diagonal[0] = False  # ROOT's own row is never used
    if not np.all(np.isfinite(s[off_diagonal])):
        raise ValueError("arc scores must be finite (mask impossible arcs with a large negative value instead)")
    return s


def _find_cycle(heads: np.ndarray) -> np.ndarray | None:
    """One cycle of the functional graph ``d -> heads[d]`` (node 0 has no head), or None."""
    n1 = heads.shape[0]
    state = np.zeros(n1, dtype=np.int8)
    state[0] = 2
    for start in range(1, n1):
        path = []
        node = start
        while state[node] == 0:
            state[node] = 1
            path.append(node)
            node = int(heads[node])
        if state[node] == 1:
            return np.array(path[path.index(node):], dtype=np.int64)
        state[path] = 2
    return None


def _max_arborescence(s: np.ndarray) -> np.ndarray:
    """Chu-Liu/Edmonds on a dense ``s[d, h]`` matrix; returns heads of length n+1 (heads[0] = -1).

    Recursive contraction: each level removes at least one node, so depth <= n and each level is
    O(n^2) numpy work.
    """
    n1 = s.shape[0]
    heads = s.argmax(axis=1)
    heads[0] = -1
    cycle = _find_cycle(heads)
    if cycle is None:
        return heads

    in_cycle = np.zeros(n1, dtype=bool)
    in_cycle[cycle] = True
    rest = np.flatnonzero(~in_cycle)  # sorted, so ROOT stays at index 0
    m = rest.shape[0]
    c = m  # index of the contracted node in the smaller problem

    # Entering the cycle at v from outside head h replaces v's cycle arc: gain s[v,h] - s[v,heads[v]].
    enter_gain = s[np.ix_(cycle, rest)] - s[cycle, heads[cycle]][:, None]  # [|C|, m]
    enter_arg = enter_gain.argmax(axis=0)
    # Leaving the cycle: outside dependent d takes its best head inside the cycle.
    leave = s[np.ix_(rest, cycle)]  # [m, |C|]
    leave_arg = leave.argmax(axis=1)

    sub = np.empty((m + 1, m + 1))
    sub[:m, :m] = s[np.ix_(rest, rest)]
    sub[c, :m] = enter_gain[enter_arg, np.arange(m)]
    sub[:m, c] = leave[np.arange(m), leave_arg]
    sub[c, c] = -np.inf
    sub[0, :] = -np.inf

    sub_heads = _max_arborescence(sub)

    out = heads.copy()
    for k in range(1, m):
        h = sub_heads[k]
        out[rest[k]] = cycle[leave_arg[k]] if h == c else rest[h]
    h_c = sub_heads[c]
    out[cycle[enter_arg[h_c]]] = rest[h_c]
    return out


def chu_liu_edmonds(scores: np.ndarray) -> np.ndarray:
    """Highest-scoring non-projective tree with exactly one ROOT child.

    ``scores[d, h]`` is the score of head ``h`` for dependent ``d`` (use log-probabilities so the
    total is the tree's log-probability). Returns the HEAD column (length n, 0 = ROOT).

    The single-root constraint is exact, not a repair: every arc from ROOT is penalised by a
    constant larger than the spread of any two trees' totals, so the unconstrained maximum
    arborescence has as few ROOT arcs as possible (one) and, among single-root trees, the highest
    original score. One CLE run instead of one per candidate root child.
    """
    s = _check_scores(scores).copy()
    n1 = s.shape[0]
    np.fill_diagonal(s, -np.inf)
    s[0, :] = -np.inf
    if n1 == 2:
        return np.zeros(1, dtype=np.int64)
    finite = s[np.isfinite(s)]
    spread = float(finite.max() - finite.min())
    s[1:, 0] -= 1.0 + 2.0 * n1 * spread
    return _max_arborescence(s)[1:].astype(np.int64)


def eisner(scores: np.ndarray) -> np.ndarray:
    """Highest-scoring projective tree with exactly one ROOT child (Eisner 1996, O(n^3)).

    Same ``scores[d, h]`` layout and return value as :func:`chu_liu_edmonds`. The dynamic
    program runs over the words only; ROOT is attached at the end to a single word ``r`` whose
    left and right complete spans cover the whole sentence, which is exactly the set of
    projective single-root trees.
    """
    s = _check_scores(scores)
    n = s.shape[0] - 1
    w = s[1:, 1:]  # w[d, h] between words, 0-based
    # Spans [i, j] over words 0..n-1. complete_r[i, j]: head i, covers i..j; complete_l: head j.
    # incomplete_r[i, j]: arc i -> j plus the words between; incomplete_l: arc j -> i.
    neg = -np.inf
    complete_r = np.full((n, n), neg)
    complete_l = np.full((n, n), neg)
    incomplete_r = np.full((n, n), neg)
    incomplete_l = np.full((n, n), neg)
    np.fill_diagonal(complete_r, 0.0)
    np.fill_diagonal(complete_l, 0.0)
    bp_ir = np.zeros((n, n), dtype=np.int64)
    bp_il = np.zeros((n, n), dtype=np.int64)
    bp_cr = np.zeros((n, n), dtype=np.int64)
    bp_cl = np.zeros((n, n), dtype=np.int64)

    # One numpy step per span length, vectorised over all start positions i and split points k.
    for length in range(1, n):
        i = np.arange(n - length)
        j = i + length
        ii, kk = i[:, None], np.arange(length)[None, :]
        # split k = i + kk in [i, j): complete_r[i, k] + complete_l[k+1, j]
        inner = complete_r[ii, ii + kk] + complete_l[ii + kk + 1, j[:, None]]
        k = inner.argmax(axis=1)
        best = inner[i, k]
        incomplete_r[i, j] = best + w[j, i]
        incomplete_l[i, j] = best + w[i, j]
        bp_ir[i, j] = bp_il[i, j] = i + k
        # complete_r[i, j] = incomplete_r[i, k] + complete_r[k, j], k = i + 1 + kk in (i, j]
        right = incomplete_r[ii, ii + 1 + kk] + complete_r[ii + 1 + kk, j[:, None]]
        k = right.argmax(axis=1)
        complete_r[i, j] = right[i, k]
        bp_cr[i, j] = i + 1 + k
        # complete_l[i, j] = complete_l[i, k] + incomplete_l[k, j], k = i + kk in [i, j)
        left = complete_l[ii, ii + kk] + incomplete_l[ii + kk, j[:, None]]
        k = left.argmax(axis=1)
        complete_l[i, j] = left[i, k]
        bp_cl[i, j] = i + k

    root_total = s[1:, 0] + complete_l[0, :] + complete_r[:, n - 1]
    r = int(root_total.argmax())

    heads = np.zeros(n, dtype=np.int64)  # 1-based heads, ROOT = 0
    heads[r] = 0
    # Iterative backtracking: (kind, i, j) with kind in {cr, cl, ir, il}.
    stack = [("cl", 0, r), ("cr", r, n - 1)]
    while stack:
        kind, i, j = stack.pop()
        if i == j:
            continue
        if kind == "cr":
            k = bp_cr[i, j]
            stack += [("ir", i, k), ("cr", k, j)]
        elif kind == "cl":
            k = bp_cl[i, j]
            stack += [("cl", i, k), ("il", k, j)]
        else:
            k = bp_ir[i, j] if kind == "ir" else bp_il[i, j]
            if kind == "ir":
                heads[j] = i + 1
            else:
                heads[i] = j + 1
            stack += [("cr", i, k), ("cl", k + 1, j)]
    return heads
