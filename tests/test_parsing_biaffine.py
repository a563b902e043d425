"""Biaffine scorer and parser head."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xbench.models.heads.biaffine import Biaffine, BiaffineParserHead
from xbench.models.heads.mst import is_tree


def test_biaffine_matches_explicit_formula() -> None:
    torch.manual_seed(0)
    m = Biaffine(3, 4, out=2, bias_x=True, bias_y=False)
    torch.nn.init.normal_(m.weight)
    x, y = torch.randn(2, 5, 3), torch.randn(2, 6, 4)
    s = m(x, y)
    assert s.shape == (2, 2, 5, 6)
    x1 = torch.cat([x, torch.ones(2, 5, 1)], -1)
    expected = torch.einsum("bnx,oxy,bmy->bonm", x1, m.weight, y)
    assert torch.allclose(s, expected, atol=1e-5)
    # the bias column of x gives a head-only term: same for every dependent row
    m2 = Biaffine(3, 4, out=1, bias_x=True, bias_y=False)
    with torch.no_grad():
        m2.weight[0, 3] = torch.randn(4)
    s2 = m2(x, y)
    assert s2.shape == (2, 5, 6)
    assert torch.allclose(s2, s2[:, :1].expand_as(s2))


def _batch(seed: int = 0):
    """Two sentences (5 and 3 words, padded to 5) with random gold trees."""
    rng = np.random.default_rng(seed)
    lengths = [5, 3]
    heads = torch.zeros(2, 5, dtype=torch.long)
    labels = torch.zeros(2, 5, dtype=torch.long)
    for b, n in enumerate(lengths):
        root = int(rng.integers(1, n + 1))
        order = [root] + [w for w in rng.permutation(np.arange(1, n + 1)).tolist() if w != root]
        for i, w in enumerate(order):
            heads[b, w - 1] = 0 if i == 0 else order[int(rng.integers(0, i))]
        labels[b, :n] = torch.from_numpy(rng.integers(0, 4, size=n))
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    words = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(seed))
    return words, mask, heads, labels


def test_shapes_and_masking() -> None:
    torch.manual_seed(0)
    head = BiaffineParserHead(hidden=16, arc_mlp=12, label_mlp=6, n_labels=4, dropout=0.0)
    words, mask, heads, labels = _batch()
    arc, lab = head(words, mask)
    assert arc.shape == (2, 6, 6) and lab.shape == (2, 6, 6, 4)
    neg = torch.finfo(arc.dtype).min
    assert (arc[1, :, 4:] == neg).all()            # padded words are never heads
    assert (torch.diagonal(arc, dim1=1, dim2=2) == neg).all()  # nobody heads itself
    assert (arc[1, 1:4, :4] > neg).logical_or(torch.eye(6, dtype=torch.bool)[1:4, :4]).all()
    loss = head.loss(arc, lab, heads, labels, mask)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # Before training, the arc biaffine is zero: uniform over valid heads, loss = log(#heads).
    expected_arc = (5 * np.log(5) + 3 * np.log(3)) / 8  # valid heads per word: ROOT + n words - itself
    arc_only = torch.nn.functional.cross_entropy(arc[:, 1:][mask], heads[mask])
    assert arc_only.item() == pytest.approx(expected_arc, rel=1e-5)


def test_loss_ignores_padding_values() -> None:
    torch.manual_seed(0)
    head = BiaffineParserHead(hidden=16, arc_mlp=12, label_mlp=6, n_labels=4, dropout=0.0)
    words, mask, heads, labels = _batch()
    arc, lab = head(words, mask)
    l1 = head.loss(arc, lab, heads, labels, mask)
    heads2, labels2 = heads.clone(), labels.clone()
    heads2[1, 3:] = 99
    labels2[1, 3:] = -100
    assert torch.equal(l1, head.loss(arc, lab, heads2, labels2, mask))


def test_overfits_tiny_batch_and_decodes_trees() -> None:
    torch.manual_seed(0)
    # Tensors this small gain nothing from intra-op threads, and on a busy 2-core machine the
    # OpenMP hand-offs cost ~10 ms per op; one thread keeps the test fast and deterministic.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _overfit_and_decode()
    finally:
        torch.set_num_threads(threads)


def _overfit_and_decode() -> None:
    head = BiaffineParserHead(hidden=16, arc_mlp=32, label_mlp=16, n_labels=4, dropout=0.0)
    words, mask, heads, labels = _batch(1)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        arc, lab = head(words, mask)
        loss = head.loss(arc, lab, heads, labels, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]

    head.eval()
    arc, lab = head(words, mask)
    for algorithm in ("mst", "eisner", "greedy"):
        out = head.decode(arc, lab, mask, algorithm=algorithm)
        assert [len(h) for h, _ in out] == [5, 3]
        for b, (h, lbl) in enumerate(out):
            n = int(mask[b].sum())
            if algorithm != "greedy":
                assert is_tree(h)
            assert h.dtype == np.int64 and lbl.dtype == np.int64
            if algorithm == "mst":  # overfit: the gold tree (always valid) is recovered
                assert h.tolist() == heads[b, :n].tolist()
                assert lbl.tolist() == labels[b, :n].tolist()
    with pytest.raises(ValueError):
        head.decode(arc, lab, mask, algorithm="beam")


def test_mst_decode_on_untrained_head_gives_trees() -> None:
    torch.manual_seed(3)
    head = BiaffineParserHead(hidden=16, arc_mlp=12, label_mlp=6, n_labels=4, dropout=0.0)
    with torch.no_grad():
        torch.nn.init.normal_(head.arc_attn.weight)
        head.arc_attn.weight[0, -1] += 5.0  # push many words towards the same heads
    words = torch.randn(4, 9, 16)
    mask = torch.arange(9)[None, :] < torch.tensor([9, 7, 2, 1])[:, None]
    arc, lab = head(words, mask)
    for h, _ in head.decode(arc, lab, mask, algorithm="mst"):
        assert is_tree(h)
