"""Word aligners (xbench/aligners/): symmetrisation, the eflomal and exact backends, the cache."""
from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import pytest

from xbench.aligners import AlignmentSet, WordAligner, align_cached, cache_key, get_aligner, symmetrise
from xbench.aligners import eflomal_backend
from xbench.aligners.eflomal_backend import EflomalAligner
from xbench.aligners.exact import ExactAligner
from xbench.aligners.symmetrise import grow_diag_final_and, intersection, union
from xbench.errors import XbenchError

# ------------------------------------------------------------------ symmetrisation

# Example A (5 source x 4 target words): growth, diagonal and chained, and a union link it never reaches.
#   F = {(0,0) (1,1) (2,1) (3,3)}        R = {(0,0) (1,1) (1,2) (3,2) (4,0)}
#   A = F ∩ R = {(0,0) (1,1)};  U = F ∪ R adds (1,2) (2,1) (3,2) (3,3) (4,0)
#   grow-diag, sweeping A in (i, j) order, neighbours (-1,0) (0,-1) (1,0) (0,1) (-1,-1) (-1,1) (1,-1) (1,1):
#     (0,0): (1,0) (0,1) not in U; (1,1) already in A
#     (1,1): (2,1) in U, source 2 unaligned -> add; (1,2) in U, target 2 unaligned -> add
#     (1,2): nothing new in U
#     (2,1): (3,2) in U (diagonal), source 3 unaligned -> add
#     (3,2): (3,3) in U, target 3 unaligned -> add
#     (3,3): nothing; a second sweep adds nothing
#   (4,0) touches no point of A, so growing never reaches it; final-and with F adds nothing (all of F
#   is in A); final-and with R rejects (4,0): target 0 is aligned (plain "final" would add it).
A_F = {(0, 0), (1, 1), (2, 1), (3, 3)}
A_R = {(0, 0), (1, 1), (1, 2), (3, 2), (4, 0)}
A_GDFA = ((0, 0), (1, 1), (1, 2), (2, 1), (3, 2), (3, 3))

# Example B: a union link whose two words are both aligned already is never added.
#   F = {(0,0) (0,1) (1,1)}, R = {(0,0) (1,1)}: A = {(0,0) (1,1)}; (0,1) neighbours (0,0) but source 0
#   and target 1 are both aligned -> not grown; final-and needs both unaligned -> not added.
B_F = {(0, 0), (0, 1), (1, 1)}
B_R = {(0, 0), (1, 1)}
B_GDFA = ((0, 0), (1, 1))

# Example C: final-and adds an isolated link whose words are both unaligned, and only that one.
#   F = {(0,0) (1,1) (2,3)}, R = {(0,0) (1,1) (3,1)}: A = {(0,0) (1,1)}; no union link neighbours A;
#   final-and(F): (2,3) with source 2 and target 3 unaligned -> add;
#   final-and(R): (3,1) with target 1 aligned -> not added.
C_F = {(0, 0), (1, 1), (2, 3)}
C_R = {(0, 0), (1, 1), (3, 1)}
C_GDFA = ((0, 0), (1, 1), (2, 3))

# Example D: final-and runs forward before reverse, so of two competing isolated links the forward one wins.
#   F = {(0,0) (2,3)}, R = {(0,0) (2,4)}: final-and(F) adds (2,3); then (2,4) has source 2 aligned.
D_F = {(0, 0), (2, 3)}
D_R = {(0, 0), (2, 4)}


def test_grow_diag_final_and_on_hand_derived_examples():
    assert grow_diag_final_and(A_F, A_R) == A_GDFA
    assert grow_diag_final_and(B_F, B_R) == B_GDFA
    assert grow_diag_final_and(C_F, C_R) == C_GDFA
    assert grow_diag_final_and(D_F, D_R) == ((0, 0), (2, 3))
    assert grow_diag_final_and(D_R, D_F) == ((0, 0), (2, 4))
    assert symmetrise(A_F, A_R) == A_GDFA  # the default
    assert grow_diag_final_and([], []) == ()
    assert grow_diag_final_and([(0, 1)], []) == ((0, 1),)  # one direction only: final-and keeps it


def test_intersection_and_union_are_sorted_sets():
    assert intersection(A_F, A_R) == ((0, 0), (1, 1))
    assert union(A_F, A_R) == ((0, 0), (1, 1), (1, 2), (2, 1), (3, 2), (3, 3), (4, 0))
    assert symmetrise(C_F, C_R, "intersection") == ((0, 0), (1, 1))
    assert symmetrise(C_F, C_R, "union") == ((0, 0), (1, 1), (2, 3), (3, 1))
    assert union([(2, 0), (0, 1), (2, 0)], []) == ((0, 1), (2, 0))
    with pytest.raises(XbenchError, match="unknown symmetrisation 'gdfa'; valid: grow-diag-final-and, intersection, union"):
        symmetrise(A_F, A_R, "gdfa")


def _gdfa_by_grid_scan(forward: set, reverse: set) -> tuple:
    """Koehn's pseudo-code, literally: full grid sweeps, aligned-ness looked up in A every time."""
    union_, links = forward | reverse, forward & reverse
    if not union_:
        return ()
    n = max(i for i, _ in union_) + 2
    m = max(j for _, j in union_) + 2
    neighbours = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))
    grew = True
    while grew:
        grew = False
        for e in range(n):
            for f in range(m):
                if (e, f) not in links:
                    continue
                for de, df in neighbours:
                    p = (e + de, f + df)
                    src_free = all(a[0] != p[0] for a in links)
                    tgt_free = all(a[1] != p[1] for a in links)
                    if (src_free or tgt_free) and p in union_ and p not in links:
                        links.add(p)
                        grew = True
    for direction in (forward, reverse):
        for e in range(n):
            for f in range(m):
                if (e, f) in direction and all(a[0] != e for a in links) and all(a[1] != f for a in links):
                    links.add((e, f))
    return tuple(sorted(links))


def test_grow_diag_final_and_equals_the_literal_grid_scan_on_random_link_sets():
    rng = random.Random(0)
    for _ in range(400):
        n, m = rng.randint(1, 7), rng.randint(1, 7)
        density = rng.uniform(0.1, 0.5)
        fwd = {(i, j) for i in range(n) for j in range(m) if rng.random() < density}
        rev = {(i, j) for i in range(n) for j in range(m) if rng.random() < density}
        assert grow_diag_final_and(fwd, rev) == _gdfa_by_grid_scan(fwd, rev), (fwd, rev)
        assert set(intersection(fwd, rev)) <= set(grow_diag_final_and(fwd, rev)) <= set(union(fwd, rev))


# ------------------------------------------------------------------ the exact backend

def test_exact_backend_returns_the_gold_links_it_was_given():
    src, tgt = ["the", "red", "house", "stands"], ["la", "maison", "rouge", "est"]
    aligner = get_aligner("exact", gold={(tuple(src), tuple(tgt)): [(3, 3), (0, 0), (1, 2), (2, 1)]})
    assert isinstance(aligner, WordAligner)
    (links,) = aligner.align([(src, tgt)])
    gold = ((0, 0), (1, 2), (2, 1), (3, 3))
    assert links == AlignmentSet(gold, gold, gold)
    with pytest.raises(XbenchError, match="pair 0 .* has no gold links"):
        aligner.align([(["the", "house"], ["la", "maison"])])
    with pytest.raises(XbenchError, match="lie outside a pair of 1 source and 1 target"):
        ExactAligner.from_examples([(["a"], ["b"], [(0, 1)])])
    with pytest.raises(XbenchError, match="needs its gold links"):
        get_aligner("exact")
    assert aligner.fingerprint() != ExactAligner.from_examples([(src, tgt, [(0, 0)])]).fingerprint()


def test_exact_backend_from_a_cipher_lexicon_follows_reordering_and_repeats():
    # A toy-world pair: adjective after noun, verb-final, names kept; "the" occurs twice.
    lexicon = {"the": "ka", "big": "lum", "dog": "voro", "sees": "tane", "cat": "miri", "Anna": "Anna"}
    src = ["Anna", "sees", "the", "big", "dog", "the", "cat"]
    tgt = ["Anna", "ka", "voro", "lum", "ka", "miri", "tane", "!"]
    aligner = ExactAligner.from_lexicon([(src, tgt)], lexicon)
    (links,) = aligner.align([(src, tgt)])
    assert links.symmetric == ((0, 0), (1, 6), (2, 1), (3, 3), (4, 2), (5, 4), (6, 5))
    links.check(len(src), len(tgt))


# ------------------------------------------------------------------ names, missing package

def test_unknown_names_list_the_valid_ones():
    with pytest.raises(XbenchError, match=r"unknown word aligner 'giza'; valid names: eflomal, exact"):
        get_aligner("giza")
    with pytest.raises(XbenchError, match="valid: grow-diag-final-and, intersection, union"):
        get_aligner("exact", symmetrisation="grow-diag", gold={})


def test_missing_eflomal_names_the_package_and_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "eflomal", None)  # `import eflomal` now fails as if not installed
    expected = r"needs the Python package 'eflomal', which is not installed\. Install it with: pip install eflomal==2\.0\.0"
    with pytest.raises(XbenchError, match=expected):
        get_aligner("eflomal")
    with pytest.raises(XbenchError, match=expected):
        EflomalAligner().align([(["a"], ["b"])])


def test_importing_the_aligners_loads_no_eflomal():
    import subprocess

    code = "import sys, xbench.aligners; print(sorted(m for m in ('eflomal', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_sentence_given_as_a_string_is_refused():
    with pytest.raises(XbenchError, match="must be two lists of words"):
        EflomalAligner().align([("a house", ["ein", "Haus"])])


# ------------------------------------------------------------------ eflomal wrapper without eflomal

def test_empty_and_overlong_sides_are_not_sent_and_keep_every_other_pair_in_place(monkeypatch):
    """The pairs sent to eflomal are the non-empty ones; links come back by pair index."""
    seen = {}

    def fake_run(self, src_lines, tgt_lines):
        seen["src"], seen["tgt"] = src_lines, tgt_lines
        diag = [tuple((i, i) for i in range(min(len(s.split()), len(t.split())))) for s, t in zip(src_lines, tgt_lines)]
        return diag, diag

    monkeypatch.setattr(EflomalAligner, "_run", fake_run)
    long = ["x"] * (eflomal_backend.MAX_WORDS + 1)
    pairs = [(["A", "b"], ["a", "B", "c"]), ([], ["x"]), (["Hund", "hund", "New York", ""], ["dog", "dog", "NY", "-"]),
             (["y"], []), (long, ["z"]), (["z"], ["z"])]
    out = EflomalAligner().align(pairs)
    # Lower-cased, numbered per side (a word with a space stays one token, an empty word stays a token).
    assert seen["src"] == ["w0 w1", "w2 w2 w3 w4", "w5"]
    assert seen["tgt"] == ["w0 w1 w2", "w3 w3 w4 w5", "w6"]
    assert [a.symmetric for a in out] == [((0, 0), (1, 1)), (), ((0, 0), (1, 1), (2, 2), (3, 3)), (), (), ((0, 0),)]
    assert EflomalAligner().align([([], [])]) == [AlignmentSet((), (), ())]


def test_eflomal_links_file_reading(tmp_path):
    path = tmp_path / "links"
    path.write_text("0-0 1-2\n\n2-1 0-0\n")
    assert eflomal_backend._read_links(path, 3) == [((0, 0), (1, 2)), (), ((0, 0), (2, 1))]
    with pytest.raises(XbenchError, match="wrote 3 alignment lines for 4 sentence pairs"):
        eflomal_backend._read_links(path, 4)


# ------------------------------------------------------------------ eflomal on real Tatoeba en-de

N_TATOEBA = 400
# Inserted among the real pairs: empty sides must not shift the pairs after them.
EMPTY_AT = {0: ([], ["Hallo"]), 150: (["Hello"], []), 151: ([], [])}


@pytest.fixture(scope="module")
def tatoeba_en_de(data_root: Path):
    pytest.importorskip("eflomal")
    from xbench.vocab.pretokenize import words

    en = (data_root / "tatoeba" / "tatoeba.deu-eng.eng").read_text(encoding="utf-8").splitlines()[:N_TATOEBA]
    de = (data_root / "tatoeba" / "tatoeba.deu-eng.deu").read_text(encoding="utf-8").splitlines()[:N_TATOEBA]
    pairs = [(words(a), words(b)) for a, b in zip(en, de)]
    for at in sorted(EMPTY_AT):
        pairs.insert(at, EMPTY_AT[at])
    aligner = get_aligner("eflomal")
    t0 = time.perf_counter()
    first = aligner.align(pairs)
    seconds = time.perf_counter() - t0
    return pairs, aligner, first, seconds


def _identical_words(src, tgt):
    """(i, j) of alphanumeric words (names, numbers, cognates) occurring once on each side, lower-cased."""
    ls, lt = [w.lower() for w in src], [w.lower() for w in tgt]
    return [(i, lt.index(w)) for i, w in enumerate(ls) if w.isalnum() and ls.count(w) == 1 and lt.count(w) == 1]


def test_eflomal_on_tatoeba_en_de_is_sane(tatoeba_en_de):
    pairs, aligner, out, seconds = tatoeba_en_de
    assert len(out) == len(pairs) and seconds < 20
    for at in EMPTY_AT:
        assert out[at] == AlignmentSet((), (), ())
    hits = total = 0
    for (src, tgt), links in zip(pairs, out):
        links.check(len(src), len(tgt))
        assert list(links.symmetric) == sorted(set(links.symmetric))
        # eflomal's directions: forward gives each target word at most one source word, reverse each source word
        # at most one target word; grow-diag-final-and lies between their intersection and union.
        assert len({j for _, j in links.forward}) == len(links.forward)
        assert len({i for i, _ in links.reverse}) == len(links.reverse)
        assert set(intersection(links.forward, links.reverse)) <= set(links.symmetric)
        assert set(links.symmetric) <= set(union(links.forward, links.reverse))
        for link in _identical_words(src, tgt):
            total += 1
            hits += link in links.symmetric
    # Measured in three runs: 72, 74 and 76 of 88 (misses are false friends such as was/was, and names seen
    # once whose link eflomal puts one word off). Pairs shifted by one would link almost none.
    assert total >= 80 and hits / total >= 0.7, (hits, total)
    n_sym = sum(len(a.symmetric) for a in out)
    n_src = sum(len(s) for s, _ in pairs)
    assert 0.6 * n_src < n_sym < 1.4 * n_src  # measured 0.89 links per source word


def test_eflomal_has_no_seed_but_two_runs_mostly_agree(tatoeba_en_de):
    """eflomal 2.0.0 seeds itself from /dev/urandom; links may differ between calls, hence the cache."""
    pairs, aligner, first, _ = tatoeba_en_de
    second = aligner.align(pairs)
    shared = sum(len(set(a.symmetric) & set(b.symmetric)) for a, b in zip(first, second))
    assert shared / sum(len(a.symmetric) for a in first) >= 0.75  # measured: 0.89-0.90


def test_eflomal_fingerprint_names_version_and_settings():
    fp = EflomalAligner("union", model=2).fingerprint()
    assert fp["backend"] == "eflomal" and fp["symmetrisation"] == "union" and fp["model"] == 2
    assert fp["lowercase"] is True and "eflomal_version" in fp
    with pytest.raises(XbenchError, match="model must be 1"):
        EflomalAligner(model=4)


# ------------------------------------------------------------------ the cache

class _Counting:
    """An exact aligner that counts its calls, with a setting that enters the fingerprint."""

    name = "counting"

    def __init__(self, gold, setting="a"):
        self.inner, self.setting, self.calls = ExactAligner(gold), setting, 0

    def align(self, pairs):
        self.calls += 1
        return self.inner.align(pairs)

    def fingerprint(self):
        return {**self.inner.fingerprint(), "setting": self.setting}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


P1 = (("a", "b"), ("x", "y"))
P2 = (("c",), ("z",))
GOLD = {P1: [(0, 1), (1, 0)], P2: [(0, 0)]}


def test_a_second_call_reads_the_cache_and_other_pairs_or_settings_miss(cache_dir):
    aligner = _Counting(GOLD)
    first = align_cached(aligner, [P1, P2])
    assert aligner.calls == 1
    assert align_cached(aligner, [list(map(list, P1)), P2]) == first  # same words as lists: a hit
    assert aligner.calls == 1
    align_cached(aligner, [P2, P1])  # other order: other pairs
    align_cached(aligner, [P1])
    assert aligner.calls == 3
    other = _Counting(GOLD, setting="b")
    assert align_cached(other, [P1, P2]) == first and other.calls == 1
    assert align_cached(aligner, []) == [] and aligner.calls == 3

    entries = sorted(cache_dir.glob("alignments/*/alignments.json"))
    assert len(entries) == 4
    stored = json.loads(entries[0].read_text())  # plain JSON, nothing pickled
    assert stored["format"] == 1 and all(len(row) == 3 for row in stored["links"])


def test_eflomal_settings_change_the_key(cache_dir, monkeypatch):
    monkeypatch.setattr(eflomal_backend, "installed_version", lambda: "2.0.0")
    calls = []

    def fake_run(self, src_lines, tgt_lines):
        calls.append(self.symmetrisation)
        return [((0, 0),)] * len(src_lines), [((0, 0),)] * len(src_lines)

    monkeypatch.setattr(EflomalAligner, "_run", fake_run)
    pairs = [(["Ja"], ["yes"])]
    default, unioned = EflomalAligner(), EflomalAligner("union")
    assert cache_key(default, pairs) != cache_key(unioned, pairs)
    assert cache_key(default, pairs) != cache_key(default, [(["ja"], ["yes"])])  # hashed before lower-casing
    align_cached(default, pairs)
    align_cached(default, pairs)
    align_cached(unioned, pairs)
    assert calls == ["grow-diag-final-and", "union"]


def test_a_damaged_cache_entry_is_an_error_that_says_what_to_do(cache_dir):
    aligner = _Counting(GOLD)
    align_cached(aligner, [P1])
    (entry,) = cache_dir.glob("alignments/*/alignments.json")
    entry.write_text(json.dumps({"format": 1, "links": [[[[0, 5]], [], []]]}))
    with pytest.raises(XbenchError, match="does not fit its pairs: .*lie outside a pair of 2 source.*cache rm"):
        align_cached(aligner, [P1])
    entry.write_text("{not json")
    with pytest.raises(XbenchError, match=r"cannot be read .*xbench cache rm --entry"):
        align_cached(aligner, [P1])
