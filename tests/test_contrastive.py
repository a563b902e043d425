"""Shared contrastive components (xbench/objectives/contrastive.py): the
properties PPA relies on (docs/methods/ppa.md), each checked on small tensors and a tiny BERT."""
from __future__ import annotations

import math

import pytest
import torch

from xbench.errors import XbenchError
from xbench.objectives.contrastive import KeyQueue, MomentumEncoder, info_nce_in_batch, info_nce_queue


def _tiny_bert(seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=32))


def _pooled(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).last_hidden_state[:, 0]


def test_the_momentum_encoder_receives_no_gradient() -> None:
    online = _tiny_bert()
    key = MomentumEncoder(online, m=0.99)
    ids = torch.randint(5, 50, (4, 7), generator=torch.Generator().manual_seed(1))
    q, k = _pooled(online, ids), _pooled(key, ids)  # no torch.no_grad(): the copy itself must refuse gradients
    info_nce_queue(q, k, KeyQueue(8, 16).keys, tau=0.05).backward()
    assert all(p.grad is None for p in key.parameters())
    assert any(p.grad is not None for p in online.parameters())


def test_the_momentum_update_is_m_old_plus_one_minus_m_new_in_fp32_and_starts_equal() -> None:
    online = _tiny_bert()
    key = MomentumEncoder(online, m=0.9)
    for (_, a), (_, b) in zip(key.encoder.state_dict().items(), online.state_dict().items()):
        assert torch.equal(a, b)  # bitwise equal at initialisation
    old = {n: p.detach().clone() for n, p in key.encoder.named_parameters()}
    opt = torch.optim.SGD(online.parameters(), lr=0.5)
    _pooled(online, torch.randint(5, 50, (3, 6))).pow(2).sum().backward()
    opt.step()
    key.update(online)
    new = dict(online.named_parameters())
    for name, p_k in key.encoder.named_parameters():
        assert torch.equal(p_k, 0.9 * old[name].float() + (1 - 0.9) * new[name].detach().float()), name
    assert any(not torch.equal(p, old[n]) for n, p in key.encoder.named_parameters())


def test_the_queue_keeps_its_length_and_writes_at_the_pointer_modulo_its_size() -> None:
    queue = KeyQueue(10, 4, seed=3)
    assert len(queue) == 10 and torch.allclose(queue.keys.norm(dim=1), torch.ones(10))
    g = torch.Generator().manual_seed(0)
    for batch in (4, 4, 4, 3, 10):
        before, ptr = queue.keys.clone(), queue.ptr
        keys = torch.randn(batch, 4, generator=g)
        queue.enqueue(keys)
        rows = [(ptr + i) % 10 for i in range(batch)]
        assert len(queue) == 10 and queue.ptr == (ptr + batch) % 10
        assert torch.equal(queue.keys[rows], keys)
        others = [r for r in range(10) if r not in rows]
        assert torch.equal(queue.keys[others], before[others])
    with pytest.raises(XbenchError, match="expected 1 to 10 keys of dimension 4"):
        queue.enqueue(torch.randn(11, 4))


def test_the_positive_is_column_zero_and_an_orthogonal_queue_gives_the_closed_form() -> None:
    K, tau = 6, 0.07
    q = torch.zeros(3, 8)
    q[torch.arange(3), torch.arange(3)] = 1.0  # three unit vectors on the first axes
    queue = torch.zeros(K, 8)
    queue[torch.arange(K), 3 + torch.arange(K) % 5] = 1.0  # unit vectors on the other axes: orthogonal to q
    expected = math.log(1 + K * math.exp(-1 / tau))
    assert info_nce_queue(q, q.clone(), queue, tau).item() == pytest.approx(expected, abs=1e-6)
    # the positive sits in column 0: a key that is the query's opposite makes the loss large
    assert info_nce_queue(q, -q, queue, tau).item() > 1 / tau


def test_in_batch_infonce_targets_the_diagonal() -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    logits = 20.0 * torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    assert info_nce_in_batch(a, b, 20.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.arange(5)).item(), abs=1e-6)
    assert info_nce_in_batch(a, a, 100.0).item() < 1e-3  # each row's own pair wins by far


def test_queue_and_momentum_encoder_are_checkpointable_runner_state() -> None:
    from xbench.runner.trainer import _extra_state_dict

    queue, key = KeyQueue(8, 16, seed=1), MomentumEncoder(_tiny_bert(), m=0.99)
    queue.enqueue(torch.randn(3, 16))
    saved = _extra_state_dict("key_queue", queue)  # refused unless a weights_only load can read it back
    _extra_state_dict("momentum_encoder", key)
    other = KeyQueue(8, 16, seed=9)
    other.load_state_dict(dict(saved))
    assert torch.equal(other.keys, queue.keys) and other.ptr == 3
    with pytest.raises(XbenchError, match="does not fit"):
        KeyQueue(4, 16).load_state_dict(dict(saved))
