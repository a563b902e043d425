"""Retrieval evaluator (docs/methods/README.md; docs/methods/meta.md, "Testable properties")."""
from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from xbench.metrics.retrieval import encode_sentences, retrieval_accuracy
from xbench.errors import ConfigError

WORDS = "the a cat dog sees eats house garden red big small runs with near old young bird fish".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


@pytest.fixture(scope="module")
def bert(tokenizer) -> BertModel:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    return BertModel(cfg)


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    rng = random.Random(0)
    out: list[str] = []
    while len(out) < 90:  # distinct sentences of varied length, so batches need padding
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 14)))
        if s not in out:
            out.append(s)
    return out


def test_identical_sides_retrieve_perfectly(bert, tokenizer, sentences):
    result = retrieval_accuracy(bert, tokenizer, sentences, sentences, batch_size=16)
    assert result == {"xx_to_en": 1.0, "en_to_xx": 1.0, "mean": 1.0}


def test_both_directions_and_their_mean(bert, tokenizer, sentences):
    # Reversed English side: every sentence's nearest neighbour is itself, at the wrong index.
    result = retrieval_accuracy(bert, tokenizer, sentences, sentences[::-1])
    assert result == {"xx_to_en": 0.0, "en_to_xx": 0.0, "mean": 0.0}
    # Half of the xx side replaced by sentences absent from the English side.
    half = len(sentences) // 2
    others = [s + " bird" for s in sentences[:half]]
    result = retrieval_accuracy(bert, tokenizer, others + sentences[half:], sentences)
    assert set(result) == {"xx_to_en", "en_to_xx", "mean"}
    assert result["mean"] == pytest.approx((result["xx_to_en"] + result["en_to_xx"]) / 2)
    assert 0.5 <= result["xx_to_en"] < 1.0


def test_pooling_is_the_mean_over_content_tokens_of_the_middle_layer(bert, tokenizer, sentences):
    layer = 2  # ⌈3 / 2⌉
    vectors = encode_sentences(bert, tokenizer, sentences, layer=layer, batch_size=8)
    ids = torch.tensor([tokenizer(sentences[5])["input_ids"]])
    bert.eval()  # the evaluator switches dropout off
    with torch.no_grad():
        hidden = bert(input_ids=ids, output_hidden_states=True).hidden_states[layer][0]
    expected = hidden[1:-1].mean(0)  # drop [CLS] and [SEP]; no padding when alone
    torch.testing.assert_close(vectors[5], expected, rtol=1e-4, atol=1e-5)
    default = retrieval_accuracy(bert, tokenizer, sentences[:20], sentences[:20][::-1])
    explicit = retrieval_accuracy(bert, tokenizer, sentences[:20], sentences[:20][::-1], layer=layer)
    assert default == explicit


def test_gpt2_without_pad_token_and_training_mode_restored(sentences):
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(["<unk>"] + WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    gpt_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(gpt_tok), n_embd=32, n_layer=2, n_head=2, n_positions=64))
    model.train()
    result = retrieval_accuracy(model, gpt_tok, sentences, sentences, batch_size=32)
    assert result["mean"] == 1.0
    assert model.training


def test_bad_arguments(bert, tokenizer, sentences):
    with pytest.raises(ConfigError, match="line-aligned"):
        retrieval_accuracy(bert, tokenizer, sentences, sentences[:-1])
    with pytest.raises(ConfigError, match="outside"):
        retrieval_accuracy(bert, tokenizer, sentences, sentences, layer=4)
    with pytest.raises(ConfigError, match="pooling"):
        retrieval_accuracy(bert, tokenizer, sentences, sentences, pooling="cls")
