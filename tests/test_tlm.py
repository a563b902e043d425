"""TLM in PPA's layout (xbench/objectives/tlm.py): spec property 5 of docs/methods/ppa.md."""
from __future__ import annotations

import pytest
import torch

from xbench.errors import XbenchError
from xbench.objectives.mlm import mask_tokens
from xbench.objectives.tlm import TLMObjective, pack_pairs

CLS, SEP, PAD, MASK, VOCAB = 2, 3, 0, 4, 60


class _Ctx:
    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)


def _batch():
    g = torch.Generator().manual_seed(0)
    first = [torch.randint(5, VOCAB, (n,), generator=g).tolist() for n in (3, 9, 6, 12)]
    second = [torch.randint(5, VOCAB, (n,), generator=g).tolist() for n in (7, 2, 12, 5)]
    return first, second, pack_pairs(first, second, cls_id=CLS, sep_id=SEP, pad_id=PAD, max_len_each=10)


def test_tlm_labels_only_at_selected_positions_with_continuous_positions_and_no_language_embedding() -> None:
    from transformers import BertConfig, BertForMaskedLM

    first, second, batch = _batch()
    ids = batch["input_ids"]
    # the layout: [CLS] a [SEP] b [SEP], each side cut to 10, segment 0 then 1, positions 0..T-1 on every row
    for i, (a, b) in enumerate(zip(first, second)):
        a, b = a[:10], b[:10]
        n = len(a) + len(b) + 3
        assert ids[i, :n].tolist() == [CLS, *a, SEP, *b, SEP] and (ids[i, n:] == PAD).all()
        assert batch["token_type_ids"][i, :n].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (ids.shape[1] - n)
    assert (batch["position_ids"] == torch.arange(ids.shape[1])).all()

    objective = TLMObjective(mask_id=MASK, vocab_size=VOCAB, special_ids=[CLS, SEP, PAD, MASK])
    selected_total = 0
    for seed in range(20):
        _, labels = mask_tokens(ids, special_mask=objective.special_mask(ids, batch["attention_mask"]),
                                mask_id=MASK, vocab_size=VOCAB, generator=_Ctx(seed).generator)
        at = labels != -100
        assert not (at & torch.isin(ids, torch.tensor([CLS, SEP, PAD]))).any()
        assert not (at & (batch["attention_mask"] == 0)).any()
        assert torch.equal(labels[at], ids[at])  # a label is the original token at its position
        selected_total += int(at.sum())
    words = int((~torch.isin(ids, torch.tensor([CLS, SEP, PAD]))).sum())
    assert abs(selected_total / (20 * words) - 0.15) < 0.03

    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.bert = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32,
                                                   max_position_embeddings=64))

        def forward(self, **kwargs):
            seen.update(kwargs)
            return self.bert(**kwargs)

    spy = Spy()
    loss = objective(spy, batch, _Ctx(1))["tlm"]
    assert torch.isfinite(loss) and loss.requires_grad
    assert set(seen) == {"input_ids", "attention_mask", "token_type_ids", "position_ids"}  # no language ids
    assert torch.equal(seen["position_ids"], batch["position_ids"])
    assert not any("lang" in name for name, _ in spy.bert.named_parameters())  # no language embedding


def test_pack_pairs_refuses_mismatched_sides() -> None:
    with pytest.raises(XbenchError, match="as many first as second"):
        pack_pairs([[5]], [[6], [7]], cls_id=CLS, sep_id=SEP, pad_id=PAD, max_len_each=4)
