"""CLP-Transfer and the other embedding initialisers (docs/methods/README.md, "Shared
building blocks"; docs/methods/clp.md, "Testable properties").

Agreement with langsfer lives in test_clp_langsfer.py.
"""
from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from xbench.models.freezing import assert_unchanged
from xbench.models.initializers import (
    SmallDenominatorWarning,
    clp_embeddings,
    clp_transfer,
    clp_weights,
    copy_overlap,
    random_init,
)
from xbench.errors import XbenchError

EN_WORDS = (
    "the a cat dog house garden runs sees eats small big red green old young with and of to in "
    "on at is was teacher child water bread street city river morning evening quickly"
).split()
DE_WORDS = (
    "der die das eine katze hund haus garten läuft sieht isst klein groß rot grün alt jung mit und "
    "von zu in auf ist war lehrer kind wasser brot straße stadt fluss morgen abend schnell"
).split()
SHARED = "Anna Berlin London Maria 1999 2024 42 Paris Tom".split()


def corpus(words: list[str], seed: int, n: int = 400) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words + SHARED) for _ in range(rng.randint(4, 12))) + "." for _ in range(n)]


def wordpiece(lines: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def byte_bpe(lines: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def saved(tokenizer: PreTrainedTokenizerFast, path) -> PreTrainedTokenizerFast:
    """Round trip through disk, as a run would load it; also gives the tokenizer a name."""
    tokenizer.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def tiny_bert(vocab: int, hidden: int, tie: bool = True) -> BertForMaskedLM:
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    return BertForMaskedLM(cfg)


def tiny_gpt2(vocab: int, hidden: int, tie: bool = True, bos_eos: int | None = None) -> GPT2LMHeadModel:
    cfg = GPT2Config(
        vocab_size=vocab,
        n_embd=hidden,
        n_layer=1,
        n_head=2,
        n_positions=64,
        tie_word_embeddings=tie,
        bos_token_id=bos_eos,
        eos_token_id=bos_eos,
    )
    return GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    """Source (English) and helper/target (German-ish) tokenizers of both families."""
    base = tmp_path_factory.mktemp("toks")
    en, de = corpus(EN_WORDS, 1), corpus(DE_WORDS, 2)
    return {
        "bert": (saved(wordpiece(en, 300), base / "en-wp"), saved(wordpiece(de, 260), base / "de-wp")),
        "gpt2": (saved(byte_bpe(en, 420), base / "en-bpe"), saved(byte_bpe(de, 380), base / "de-bpe")),
    }


def build_pair(toks, family: str, tie: bool, dtype: torch.dtype):
    src_tok, tgt_tok = toks[family]
    torch.manual_seed(0)
    if family == "bert":
        source, helper = tiny_bert(len(src_tok), 64, tie), tiny_bert(len(tgt_tok), 32)
    else:
        eos = src_tok.eos_token_id
        source, helper = tiny_gpt2(len(src_tok), 64, tie, eos), tiny_gpt2(len(tgt_tok), 32, True, eos)
    bias = getattr(source.get_output_embeddings(), "bias", None)
    if bias is not None:
        with torch.no_grad():
            bias.normal_(0, 0.1)  # the initial zero bias would make the bias checks vacuous
    return source.to(dtype), src_tok, helper, tgt_tok


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int16 if t.element_size() == 2 else torch.int32)


def overlap_ids(src_tok, tgt_tok) -> tuple[list[int], list[int], list[int]]:
    sv, tv = src_tok.get_vocab(), tgt_tok.get_vocab()
    over = sorted((tv[t], sv[t]) for t in tv if t in sv)
    missing = sorted(tv[t] for t in tv if t not in sv)
    return [t for t, _ in over], [s for _, s in over], missing


# --------------------------------------------------------------------------- overlap rows and weights


@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_overlapping_rows_are_bit_identical(toks, family, dtype):
    source, src_tok, helper, tgt_tok = build_pair(toks, family, True, dtype)
    src_emb = source.get_input_embeddings().weight
    out, report = clp_embeddings(
        src_emb, src_tok.get_vocab(), tgt_tok.get_vocab(), helper.get_input_embeddings().weight
    )
    t_over, s_over, missing = overlap_ids(src_tok, tgt_tok)
    assert out.dtype == dtype and out.shape == (len(tgt_tok), src_emb.shape[1])
    assert report.overlap == len(t_over) > 0 and report.missing == len(missing) > 0
    assert torch.equal(bits(out[t_over]), bits(src_emb[s_over]))
    # special tokens are part of the overlap (exact keys, specials included)
    specials = ["[CLS]", "[SEP]", "[PAD]", "[MASK]"] if family == "bert" else ["<|endoftext|>"]
    for tok in specials:
        assert torch.equal(out[tgt_tok.convert_tokens_to_ids(tok)], src_emb[src_tok.convert_tokens_to_ids(tok)])


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_weights_sum_to_one_in_float64(toks, family):
    _, src_tok, helper, tgt_tok = build_pair(toks, family, True, torch.float32)
    t_over, _, missing = overlap_ids(src_tok, tgt_tok)
    h = helper.get_input_embeddings().weight.detach()
    weights, denom = clp_weights(h[missing], h[t_over])
    assert weights.dtype == torch.float64 and weights.shape == (len(missing), len(t_over))
    assert (weights.sum(dim=1) - 1).abs().max().item() < 1e-6
    assert (weights < 0).any(), "negative similarities must be kept (no softmax, no clipping)"
    _, report = clp_embeddings(torch.randn(len(src_tok), 8), src_tok.get_vocab(), tgt_tok.get_vocab(), h)
    assert report.max_weight_sum_error < 1e-6


def test_one_hot_similarity_reproduces_the_source_row():
    d, dh = 6, 4
    source_vocab = {"a": 0, "b": 1, "c": 2, "only-source": 3}
    target_vocab = {"c": 0, "new": 1, "a": 2, "b": 3}
    source = torch.randn(4, d, generator=torch.Generator().manual_seed(3))
    helper = torch.zeros(4, dh)
    helper[2] = torch.tensor([1.0, 0, 0, 0])  # a
    helper[3] = torch.tensor([0, 2.0, 0, 0])  # b
    helper[0] = torch.tensor([0, 0, 0.5, 0])  # c
    helper[1] = torch.tensor([0, 3.0, 0, 0])  # new: same direction as b, orthogonal to a and c
    out, report = clp_embeddings(source, source_vocab, target_vocab, helper)
    assert (report.overlap, report.missing) == (3, 1)
    assert (out[1] - source[1]).abs().max().item() < 1e-6


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_missing_row_matches_a_direct_float64_computation(toks, family):
    source, src_tok, helper, tgt_tok = build_pair(toks, family, True, torch.float32)
    sv, tv = src_tok.get_vocab(), tgt_tok.get_vocab()
    E = source.get_input_embeddings().weight.detach().numpy().astype(np.float64)
    H = helper.get_input_embeddings().weight.detach().numpy().astype(np.float64)
    out, _ = clp_embeddings(torch.from_numpy(E).float(), sv, tv, torch.from_numpy(H).float())
    token = next(t for t in sorted(tv, key=tv.get) if t not in sv and not t.startswith("["))
    v = tv[token]
    overlap = [t for t in tv if t in sv]
    norms = np.linalg.norm(H, axis=1)
    # The helper BERT's [PAD] row is all zeros: its cosine counts as 0 (sklearn's convention,
    # which the reference code and langsfer inherit).
    cos = {u: float(H[v] @ H[tv[u]] / (norms[v] * norms[tv[u]])) if norms[tv[u]] > 0 else 0.0 for u in overlap}
    denom = sum(cos.values())
    expected = sum((cos[u] / denom) * E[sv[u]] for u in overlap)
    np.testing.assert_allclose(out[v].numpy(), expected.astype(np.float32), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- the transferred model


@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tie", [True, False])
def test_clp_transfer_keeps_everything_but_the_vocabulary(toks, family, dtype, tie):
    source, src_tok, helper, tgt_tok = build_pair(toks, family, tie, dtype)
    before = {k: v.clone() for k, v in source.state_dict().items()}
    target, report = clp_transfer(source, src_tok, helper, tgt_tok)

    vocab_keys = {k for k, v in before.items() if v.shape[:1] == (len(src_tok),)}
    expected_vocab_keys = (
        {"bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.weight",
         "cls.predictions.decoder.bias", "cls.predictions.bias"}
        if family == "bert"
        else {"transformer.wte.weight", "lm_head.weight"}
    )
    assert vocab_keys == expected_vocab_keys
    after = target.state_dict()
    assert set(after) == set(before)
    assert_unchanged(before, after, sorted(set(before) - vocab_keys))
    assert_unchanged(before, source.state_dict(), sorted(before))  # the source is not modified

    v_t = len(tgt_tok)
    emb, out = target.get_input_embeddings(), target.get_output_embeddings()
    assert target.config.vocab_size == v_t == emb.weight.shape[0] == out.weight.shape[0]
    assert all(p.dtype == dtype for p in target.parameters())
    assert report.vocab_size == v_t and report.overlap > 0 and report.missing > 0

    t_over, s_over, missing = overlap_ids(src_tok, tgt_tok)
    src_in = source.get_input_embeddings().weight.detach()
    assert torch.equal(bits(emb.weight[t_over]), bits(src_in[s_over]))
    if tie:
        assert out.weight is emb.weight and report.output_embeddings == "tied"
    else:
        assert out.weight is not emb.weight and report.output_embeddings == "clp"
        src_out = source.get_output_embeddings().weight.detach()
        assert torch.equal(bits(out.weight[t_over]), bits(src_out[s_over]))
        expected, _ = clp_embeddings(
            src_out, src_tok.get_vocab(), tgt_tok.get_vocab(), helper.get_input_embeddings().weight
        )
        assert torch.equal(out.weight.detach(), expected)

    if family == "bert":
        src_bias = source.get_output_embeddings().bias.detach()
        new_bias = out.bias.detach()
        assert report.output_bias and new_bias.shape == (v_t,)
        assert out.bias is target.cls.predictions.bias  # the bias HF saves and the one it uses agree
        assert torch.equal(bits(new_bias[t_over]), bits(src_bias[s_over]))
        h = helper.get_input_embeddings().weight.detach()
        weights, _ = clp_weights(h[missing], h[t_over])
        expected_bias = weights @ src_bias[s_over].double()
        tol = 1e-2 if dtype == torch.bfloat16 else 1e-6  # one rounding to the source dtype
        torch.testing.assert_close(new_bias[missing].double(), expected_bias, rtol=tol, atol=tol)

    ids = torch.tensor([tgt_tok("the Haus und die Katze")["input_ids"]])
    assert target(input_ids=ids).logits.shape == (1, ids.shape[1], v_t)


def test_untied_copy_input_and_special_ids(toks):
    source, src_tok, helper, tgt_tok = build_pair(toks, "gpt2", False, torch.float32)
    target, report = clp_transfer(source, src_tok, helper, tgt_tok, init_output="copy_input")
    emb, out = target.get_input_embeddings().weight, target.get_output_embeddings().weight
    assert out is not emb and torch.equal(out, emb) and report.output_embeddings == "copy_input"
    assert target.config.eos_token_id == tgt_tok.eos_token_id
    assert target.generation_config.eos_token_id == tgt_tok.eos_token_id


def test_clp_transfer_leaves_the_global_rng_alone(toks):
    source, src_tok, helper, tgt_tok = build_pair(toks, "bert", True, torch.float32)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    clp_transfer(source, src_tok, helper, tgt_tok)
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- errors and warnings


def test_empty_overlap_names_both_tokenizers(tmp_path):
    def word_level(tokens: list[str], name: str):
        tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=tokens[0]))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        return saved(PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=tokens[0]), tmp_path / name)

    src_tok = word_level(["<unk>", "cat", "dog"], "english-words")
    tgt_tok = word_level(["[UNK]", "katze", "hund", "haus"], "german-words")
    source, helper = tiny_bert(len(src_tok), 16), tiny_bert(len(tgt_tok), 8)
    with pytest.raises(XbenchError) as err:
        clp_transfer(source, src_tok, helper, tgt_tok)
    assert "english-words" in str(err.value) and "german-words" in str(err.value)
    with pytest.raises(XbenchError) as err:
        clp_embeddings(
            torch.randn(3, 4), src_tok.get_vocab(), tgt_tok.get_vocab(), torch.randn(4, 2),
            source_name="src-name", target_name="tgt-name",
        )
    assert "src-name" in str(err.value) and "tgt-name" in str(err.value)


def test_small_denominator_warns_naming_the_token():
    source_vocab = {"a": 0, "b": 1, "c": 2}
    target_vocab = {"a": 0, "b": 1, "c": 2, "fragile": 3, "fine": 4}
    source = torch.tensor([[1.0, 2.0], [3.0, -4.0], [0.5, 0.5]])
    helper = torch.tensor(
        [
            [1.0, 0.0],  # a
            [-1.0, 1e-4],  # b: almost opposite to a
            [0.0, 1.0],  # c
            [1.0, 0.0],  # fragile: cos(a) + cos(b) + cos(c) ≈ 5e-9
            [0.0, 1.0],  # fine: ≈ 1
        ]
    )
    with pytest.warns(SmallDenominatorWarning, match="'fragile'") as record:
        out, report = clp_embeddings(source, source_vocab, target_vocab, helper)
    assert report.small_denominator == 1 and report.small_denominator_tokens == ["fragile"]
    assert "'fine'" not in str(record[0].message)
    assert out[3].abs().max() > 1e3  # the reference value is kept, huge as it is

    with pytest.warns(SmallDenominatorWarning):
        out, _ = clp_embeddings(source, source_vocab, target_vocab, helper, on_small_denominator="fallback_mean")
    assert torch.allclose(out[3], source.mean(0))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clp_embeddings(source, source_vocab, {"a": 0, "b": 1, "c": 2, "fine": 3}, helper[[0, 1, 2, 4]])


# --------------------------------------------------------------------------- other initialisers


def test_random_init_is_seeded_and_matches_source_statistics(toks):
    source, src_tok, _, tgt_tok = build_pair(toks, "gpt2", True, torch.float32)
    a = random_init(source, src_tok, tgt_tok, seed=7)
    b = random_init(source, src_tok, tgt_tok, seed=7)
    assert torch.equal(a, b) and a.shape == (len(tgt_tok), 64)
    src = source.get_input_embeddings().weight.detach()
    assert (a.mean(0) - src.mean(0)).abs().max() < 0.5 * src.std(0).max()
    m = random_init(source, src_tok, tgt_tok, scheme="model_init", seed=7)
    assert torch.equal(m, random_init(source, src_tok, tgt_tok, scheme="model_init", seed=7))
    assert abs(m.std().item() - source.config.initializer_range) < 0.005


def test_copy_overlap_exact_and_fuzzy(tmp_path):
    def word_level(tokens: list[str], name: str):
        tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=tokens[0]))
        return saved(PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=tokens[0]), tmp_path / name)

    src_tok = word_level(["[UNK]", "Ġthe", "##ing", "House", "house"], "src")
    tgt_tok = word_level(["[UNK]", "the", "ing", "house", "neu"], "tgt")
    source = tiny_bert(len(src_tok), 8)
    src = source.get_input_embeddings().weight.detach()
    exact = copy_overlap(source, src_tok, tgt_tok)
    assert torch.equal(exact[0], src[0]) and torch.equal(exact[3], src[4])
    assert not torch.equal(exact[1], src[1])
    fuzzy = copy_overlap(source, src_tok, tgt_tok, match="fuzzy")
    assert torch.equal(fuzzy[1], src[1]) and torch.equal(fuzzy[2], src[2])
    assert torch.equal(fuzzy[3], src[4])  # the exact key beats the lower-id fuzzy match "House"
    assert torch.equal(fuzzy[4], exact[4])  # unmatched rows come from the same seeded random init
