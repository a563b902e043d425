"""Freezing, parameter accounting and checkpoint averaging (docs/methods/README.md, docs/protocols.md)."""
from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel, GPT2Config, GPT2LMHeadModel

from xbench.models.averaging import average_state_dicts, combine_by_pattern
from xbench.models.freezing import (
    assert_unchanged,
    freeze,
    non_embedding_parameter_count,
    trainable_report,
    unfreeze,
)
from xbench.errors import ConfigError

V, H, L, F, P, T = 120, 32, 3, 48, 40, 2


def bert_config(**kw) -> BertConfig:
    return BertConfig(
        vocab_size=V,
        hidden_size=H,
        num_hidden_layers=L,
        num_attention_heads=2,
        intermediate_size=F,
        max_position_embeddings=P,
        type_vocab_size=T,
        **kw,
    )


def per_layer() -> int:
    attention = 4 * (H * H + H) + 2 * H  # Q, K, V, output projection; LayerNorm
    ffn = (H * F + F) + (F * H + H) + 2 * H  # intermediate, output; LayerNorm
    return attention + ffn


def test_non_embedding_count_matches_a_hand_computation():
    torch.manual_seed(0)
    embeddings_layernorm = 2 * H
    # BertModel: word, position and token-type embeddings excluded; the pooler is counted.
    model = BertModel(bert_config())
    expected = embeddings_layernorm + L * per_layer() + (H * H + H)
    assert non_embedding_parameter_count(model) == expected
    assert sum(p.numel() for p in model.parameters()) == expected + (V + P + T) * H

    # BertForMaskedLM (no pooler): the tied decoder matrix is the word embedding, excluded once;
    # the MLM transform and the per-token decoder bias (a vector, not a matrix) are counted.
    mlm = BertForMaskedLM(bert_config())
    expected_mlm = embeddings_layernorm + L * per_layer() + (H * H + H) + 2 * H + V
    assert non_embedding_parameter_count(mlm) == expected_mlm
    report = trainable_report(mlm)
    assert report == {
        "total": expected_mlm + (V + P + T) * H,
        "trainable": expected_mlm + (V + P + T) * H,
        "frozen": 0,
        "non_embedding": expected_mlm,
    }

    # An untied output matrix is excluded too (docs/protocols.md: "tied or not").
    # Untied, transformers 5 also unties `cls.predictions.bias` from the decoder bias: two vectors.
    untied = BertForMaskedLM(bert_config(tie_word_embeddings=False))
    assert non_embedding_parameter_count(untied) == expected_mlm + V
    assert trainable_report(untied)["total"] == expected_mlm + V + (V + P + T) * H + V * H


def test_non_embedding_count_gpt2():
    d, layers, vocab, ctx = 16, 2, 50, 24
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=d, n_layer=layers, n_head=2, n_positions=ctx))
    block = 2 * (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    assert non_embedding_parameter_count(model) == layers * block + 2 * d  # + final LayerNorm


def test_freeze_unfreeze_and_bitwise_unchanged():
    torch.manual_seed(0)
    model = BertForMaskedLM(bert_config())
    frozen = freeze(model, ["bert.embeddings.*", "bert.encoder.layer.0.*"])
    assert "bert.embeddings.word_embeddings.weight" in frozen
    assert not model.cls.predictions.decoder.weight.requires_grad  # tied: frozen with its alias
    report = trainable_report(model)
    frozen_count = (V + P + T) * H + 2 * H + per_layer()
    assert report["frozen"] == frozen_count and report["trainable"] == report["total"] - frozen_count

    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    ids = torch.randint(5, V, (4, 12))
    model.train()  # frozen layers still run with dropout, as the reference code does
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    after = model.state_dict()
    assert_unchanged(before, after, ["bert.embeddings.*", "bert.encoder.layer.0.*", "cls.predictions.decoder.weight"])
    with pytest.raises(AssertionError, match="bert.encoder.layer.1"):
        assert_unchanged(before, after, ["bert.encoder.layer.1.*"])

    unfreeze(model, "bert.encoder.layer.0.*")
    assert trainable_report(model)["frozen"] == (V + P + T) * H + 2 * H


def test_patterns_that_match_nothing_are_errors():
    model = BertModel(bert_config())
    with pytest.raises(ConfigError) as err:
        freeze(model, ["embeddings.*", "encoder.layers.*", "pooler.dense.weight", "bert.pooler.*"])
    message = str(err.value)
    assert "encoder.layers.*" in message and "bert.pooler.*" in message
    assert "'embeddings.*'" not in message and "pooler.dense.weight" not in message
    assert all(p.requires_grad for p in model.parameters())  # nothing half-applied
    with pytest.raises(ConfigError):
        assert_unchanged(model.state_dict(), model.state_dict(), "nope.*")


def test_assert_unchanged_is_bitwise():
    a = {"w": torch.tensor([float("nan"), 0.0])}
    assert_unchanged(a, {"w": a["w"].clone()}, "*")  # NaN equals itself bitwise
    with pytest.raises(AssertionError):
        assert_unchanged(a, {"w": torch.tensor([float("nan"), -0.0])}, "*")  # -0.0 is a change
    with pytest.raises(AssertionError):
        assert_unchanged(a, {"w": a["w"].double()}, "*")


# --------------------------------------------------------------------------- averaging


def random_sd(seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "layer.weight": torch.randn(5, 3, generator=g).to(dtype),
        "layer.bias": torch.randn(3, generator=g).to(dtype),
        "head.weight": torch.randn(2, 3, generator=g).to(dtype),
        "position_ids": torch.arange(7),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_average_is_exact(dtype):
    a, b, c = random_sd(1, dtype), random_sd(2, dtype), random_sd(3, dtype)
    mean2 = average_state_dicts([a, b])
    for k in ("layer.weight", "layer.bias", "head.weight"):
        assert mean2[k].dtype == dtype
        assert torch.equal(mean2[k], (a[k] + b[k]) / 2)  # halving is exact, so both recipes agree
    assert torch.equal(mean2["position_ids"], a["position_ids"])

    weighted = average_state_dicts([a, b, c], weights=[1, 1, 2])
    for k in ("layer.weight", "layer.bias", "head.weight"):
        assert torch.equal(weighted[k], a[k] * 0.25 + b[k] * 0.25 + c[k] * 0.5)
    same = average_state_dicts([a, a])
    assert all(torch.equal(same[k], a[k]) for k in a)


def test_average_rejects_mismatches():
    a, b = random_sd(1), random_sd(2)
    with pytest.raises(ConfigError, match="different keys"):
        average_state_dicts([a, {k: v for k, v in b.items() if k != "head.weight"}])
    with pytest.raises(ConfigError, match="head.weight"):
        average_state_dicts([a, {**b, "head.weight": torch.randn(3, 3)}])
    with pytest.raises(ConfigError, match="position_ids"):
        average_state_dicts([a, {**b, "position_ids": torch.arange(7) + 1}])
    with pytest.raises(ConfigError):
        average_state_dicts([a, b], weights=[1.0])


def test_combine_by_pattern_first_match_wins():
    a, b = random_sd(1), random_sd(2)
    out = combine_by_pattern({"layer.*": a, "*": b})
    assert out["layer.weight"] is a["layer.weight"] and out["layer.bias"] is a["layer.bias"]
    assert out["head.weight"] is b["head.weight"] and out["position_ids"] is b["position_ids"]
    with pytest.raises(ConfigError, match="matches no pattern"):
        combine_by_pattern({"layer.*": a, "head.*": b})
    with pytest.raises(ConfigError, match="matches no key"):
        combine_by_pattern({"encoder.*": a, "*": b})
    with pytest.raises(ConfigError):
        combine_by_pattern({"layer.*": a, "*": {**b, "head.weight": torch.randn(3, 3)}})
