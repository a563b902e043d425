from __future__ import annotations

import numpy as np

from xbench.runner.batching import length_grouped_batches, sorted_batches


def _padding_share(lengths, batches):
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - real / padded


def test_length_grouping_is_deterministic_and_complete():
    lengths = np.random.default_rng(0).integers(5, 120, size=1000).tolist()
    a = length_grouped_batches(lengths, seed=3, epoch=1, batch_size=32)
    b = length_grouped_batches(lengths, seed=3, epoch=1, batch_size=32)
    c = length_grouped_batches(lengths, seed=3, epoch=2, batch_size=32)
    assert a == b and a != c
    assert sorted(i for batch in a for i in batch) == list(range(1000))


def test_length_grouping_removes_most_padding():
    lengths = np.random.default_rng(0).integers(20, 71, size=2000).tolist()
    rng = np.random.default_rng(1)
    order = rng.permutation(2000).tolist()
    random_batches = [order[i:i + 32] for i in range(0, 2000, 32)]
    grouped = length_grouped_batches(lengths, seed=0, epoch=0, batch_size=32)
    assert _padding_share(lengths, grouped) < 0.05 < _padding_share(lengths, random_batches)


def test_token_budget_batches_respect_budget():
    lengths = np.random.default_rng(0).integers(5, 200, size=500).tolist()
    for batches in (length_grouped_batches(lengths, seed=0, epoch=0, batch_tokens=1024), sorted_batches(lengths, batch_tokens=1024)):
        for b in batches:
            assert max(lengths[i] for i in b) * len(b) <= 1024 or len(b) == 1
