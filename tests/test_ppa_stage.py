"""PPA's alignment stage (xbench/stages/ppa.py) on a tiny BERT: random input shuffling (spec property 6),
the losses, the token count and the state the runner keeps."""
from __future__ import annotations

import math

import pytest
import torch

from xbench.stages.ppa import PairPlan, PPAArgs, count_ppa_tokens, train_ppa

SPECIAL = {"cls_id": 2, "sep_id": 3, "pad_id": 0}


def _pairs(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        en = torch.randint(5, 40, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
        out.append((en, [t + 10 for t in en][::-1]))  # a "translation": a fixed relabelling, reordered
    return out


@pytest.mark.parametrize("p, low, high", [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.5, 0.48, 0.52)])
def test_random_input_shuffling_puts_english_first_with_probability_p_shuffle(p, low, high) -> None:
    pairs = _pairs(10_000)
    plan = PairPlan(pairs, batch_size=500, p_shuffle=p, seed=3, max_len=16, **SPECIAL)
    en_query = torch.cat([plan.collate(b)["en_is_query"] for b in plan.batches(0)]).float().mean().item()
    assert low <= en_query <= high
    batch = plan.collate(plan.batches(0)[0])
    for row, (i, en_first) in enumerate(plan.batches(0)[0][:20]):
        en, xx = pairs[i]
        first = en if en_first else xx
        assert batch["query_input_ids"][row, :len(first) + 2].tolist() == [2, *first, 3]
        assert batch["input_ids"][row, 1:len(first) + 1].tolist() == first  # TLM puts the query side first


def test_the_stage_trains_both_losses_and_counts_the_passes_with_gradients(tmp_path) -> None:
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, 60)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32, max_position_embeddings=64))
    pairs = _pairs(20)
    args = PPAArgs(lr=1e-3, batch_size=4, max_steps=8, queue_size=8, momentum=0.9, tau=0.05, seed=1, max_len=16)
    plan = PairPlan(pairs, batch_size=4, p_shuffle=0.5, seed=1, max_len=16, **SPECIAL)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit, parts = train_ppa(model, plan, tok, args, tmp_path / "run", name="ppa test")
    assert len(parts["sent"]) == len(parts["tlm"]) == 8
    assert all(math.isfinite(x) for x in parts["sent"] + parts["tlm"])
    assert fit.losses[0] == pytest.approx(parts["sent"][0] + parts["tlm"][0], rel=1e-5)  # L_sent + 1.0 * L_TLM
    batches = [*plan.batches(0), *plan.batches(1)][:8]  # 5 batches an epoch: the stage ran into the second
    assert fit.record.tokens_seen == sum(count_ppa_tokens(plan.collate(b)) for b in batches)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
