"""Static subword vectors and embedding mapping (xbench/embeddings; docs/methods/trelm.md, Stages B and C)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xbench.embeddings.mapping import (csls, criterion, induce_dictionary, mean_knn_cosine, procrustes, refine,
                                       MappingSettings)
from xbench.embeddings.static import ABSENT_VALUE, StaticVectorSettings, token_frequencies, train_static_vectors
from xbench.errors import XbenchError

CORPUS = [s.split() for s in [
    "der hund läuft schnell", "the dog runs fast", "die katze schläft", "the cat sleeps",
    "der hund schläft", "the dog sleeps", "die katze läuft", "the cat runs"] * 20]


def test_static_vectors_every_vocabulary_entry_gets_a_row_absent_ones_the_constant_row():
    vocab = ["[PAD]", "[UNK]", "der", "hund", "the", "dog", "##never", "katze"]
    vecs, report = train_static_vectors(CORPUS, vocab, StaticVectorSettings(dim=8, epochs=2))
    assert vecs.shape == (len(vocab), 8) and vecs.dtype == np.float32
    for i, tok in enumerate(vocab):
        absent = tok in ("[PAD]", "[UNK]", "##never")
        assert np.all(vecs[i] == np.float32(ABSENT_VALUE)) == absent, tok
    assert report["present"] == 5 and report["absent"] == 3


def test_static_vectors_are_reproducible_for_a_seed_and_change_with_it():
    vocab = ["der", "hund", "the", "dog"]
    s = StaticVectorSettings(dim=8, epochs=2, seed=3)
    a, _ = train_static_vectors(CORPUS, vocab, s)
    b, _ = train_static_vectors(CORPUS, vocab, s)
    c, _ = train_static_vectors(CORPUS, vocab, StaticVectorSettings(dim=8, epochs=2, seed=4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_static_vectors_refuse_an_empty_corpus():
    with pytest.raises(XbenchError, match="no tokens"):
        train_static_vectors([[], []], ["a"], StaticVectorSettings(dim=4, epochs=1))


def test_token_frequencies_follow_the_vocabulary_order():
    assert token_frequencies([["a", "b", "a"], ["c"]], ["c", "a", "z"]) == [1, 2, 0]


def _rotation(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_procrustes_recovers_a_rotation_from_a_dictionary():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 16))
    R = _rotation(16, 1)
    W = procrustes(torch.tensor(X[:100]), torch.tensor(X[:100] @ R.T))
    assert np.allclose(W.numpy(), R, atol=1e-5)
    assert np.allclose(W.numpy() @ W.numpy().T, np.eye(16), atol=1e-5)


def test_csls_equals_its_definition_computed_by_brute_force():
    rng = np.random.default_rng(2)
    A, B, k = rng.normal(size=(40, 8)), rng.normal(size=(30, 8)), 5
    a = A / np.linalg.norm(A, axis=1, keepdims=True)
    b = B / np.linalg.norm(B, axis=1, keepdims=True)
    cos = a @ b.T
    r_b = np.sort(cos, axis=1)[:, -k:].mean(axis=1)  # each source's k nearest targets
    r_a = np.sort(cos.T, axis=1)[:, -k:].mean(axis=1)  # each target's k nearest sources
    want = 2 * cos - r_b[:, None] - r_a[None, :]
    assert np.allclose(csls(torch.tensor(A), torch.tensor(B), k).numpy(), want, atol=1e-5)
    assert np.allclose(mean_knn_cosine(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), k).numpy(),
                       r_b, atol=1e-6)


def test_induce_dictionary_pairs_the_most_frequent_sources_with_their_csls_nearest_targets():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 8))
    Y = X[::-1].copy() + rng.normal(scale=1e-3, size=X.shape)  # source i is target 49 - i
    order = list(range(49, -1, -1))  # the last rows are the most frequent
    d = induce_dictionary(torch.tensor(X), torch.tensor(Y), "csls_knn_10", "S2T", max_rank=5, src_order=order)
    assert d.tolist() == [[i, 49 - i] for i in order[:5]]
    both = induce_dictionary(torch.tensor(X), torch.tensor(Y), "nn", "S2T&T2S", max_rank=50)
    assert sorted(both.tolist()) == [[i, 49 - i] for i in range(50)]
    with pytest.raises(XbenchError, match="valid: nn, csls_knn_"):
        induce_dictionary(torch.tensor(X), torch.tensor(Y), "knn")


def test_refinement_from_a_rough_map_converges_to_the_rotation_and_the_criterion_prefers_it():
    rng = np.random.default_rng(4)
    d, n = 16, 1000
    X = rng.normal(size=(n, d)) * np.exp(np.linspace(np.log(0.1), np.log(3), d))
    R = _rotation(d, 5)
    Y = X @ R.T + rng.normal(scale=0.01, size=(n, d))
    rough = R + rng.normal(scale=0.08, size=(d, d))  # a map near the truth, as adversarial training should leave it
    s = MappingSettings(refinements=3, max_rank=n, criterion_rank=n)
    W, report = refine(torch.tensor(rough, dtype=torch.float32), X, Y, s)
    mapped = torch.tensor(X, dtype=torch.float32) @ W.T
    p1 = (csls(mapped, Y, 10).argmax(dim=1) == torch.arange(n)).float().mean().item()
    assert p1 > 0.99
    assert report["best_criterion"] >= report["rounds"][0]["criterion"]
    assert criterion(mapped, Y, rank=n) > criterion(torch.tensor(X, dtype=torch.float32), Y, rank=n)
