"""CdLM records, the Stage-F collator and loss (docs/methods/trelm.md, "CdLM records", "The CdLM
collator"; properties 6 and 7 of its "Tests" section).

The toy bilingual world does not exist yet, so the pairs here are hand-made, with gold links: an
English-like side and a side ciphered word by word with the toy world's reordering rules
(adjective after noun, verb last), plus a particle no English word links to.
"""
from __future__ import annotations

import json

import pytest
import torch

from xbench.errors import DataFormatError, XbenchError
from xbench.objectives.cdlm import (
    MODEL_INPUT_KEYS,
    CdlmCollator,
    CdlmFeatures,
    build_cdlm_record,
    cdlm_records_for_pair,
    encode_cdlm_record,
    read_cdlm_jsonl,
    stage_f_examples,
    stage_f_loss,
    write_cdlm_jsonl,
    xx_mlm_example,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP, MASK = range(5)
LANGS = {"en": 0, "xx": 1}

# "the red house is big" -> "das haus rot gross ist": adjective after noun, verb last.
EN = ["the", "red", "house", "is", "big"]
XX = ["das", "haus", "rot", "gross", "ist"]
GOLD = [(0, 0), (1, 2), (2, 1), (3, 4), (4, 3)]  # (en index, xx index)
# The same sentence with a particle ("ja") that no English word gives.
XX_PARTICLE = ["das", "haus", "ist", "ja", "rot"]
GOLD_PARTICLE = [(0, 0), (2, 1), (3, 2), (1, 4)]


class ToyTokenizer:
    """The three things the collator and the encoder ask of a tokenizer."""

    def __init__(self, words: list[str]) -> None:
        self.vocab = {w: i for i, w in enumerate(SPECIALS + sorted(set(words)))}
        self.pad_token_id, self.mask_token_id = PAD, MASK
        self.all_special_ids = list(range(len(SPECIALS)))

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        return [self.vocab.get(t, UNK) for t in tokens]

    def __len__(self) -> int:
        return len(self.vocab)


# ------------------------------------------------------------------ property 7

def test_property_7_align_index_equals_the_gold_permutation_for_a_known_reordering():
    en_xx, _ = cdlm_records_for_pair(EN, XX, GOLD, GOLD, xx_lang="xx")
    assert en_xx["src"] == ["[CLS]", *EN, "[SEP]", "[PAD]"]
    assert en_xx["tgt"] == ["[CLS]", *XX, "[SEP]"]
    assert (en_xx["src_lang"], en_xx["tgt_lang"]) == ("en", "xx")
    # Output j (an xx word) takes the state of the English word it translates; [CLS] and [SEP] by construction.
    assert en_xx["align_index"] == [0, 1, 3, 2, 5, 4, 6]
    for i, j in GOLD:
        assert en_xx["src"][en_xx["align_index"][j + 1]] == EN[i]


def test_property_7_unaligned_output_positions_point_to_the_null_slot():
    en_xx, _ = cdlm_records_for_pair(EN, XX_PARTICLE, GOLD_PARTICLE, GOLD_PARTICLE, xx_lang="xx")
    null_slot = len(en_xx["src"]) - 1
    assert en_xx["src"][null_slot] == "[PAD]" and null_slot == len(EN) + 2
    assert en_xx["align_index"] == [0, 1, 3, 4, null_slot, 2, len(EN) + 1]
    # Nothing links "big" either: in the reverse record the English "big" gets the null slot.
    _, xx_en = cdlm_records_for_pair(EN, XX_PARTICLE, GOLD_PARTICLE, GOLD_PARTICLE, xx_lang="xx")
    assert xx_en["align_index"][1 + 4] == len(xx_en["src"]) - 1


def test_property_7_the_reverse_record_swaps_roles():
    en_xx, xx_en = cdlm_records_for_pair(EN, XX, GOLD, GOLD, xx_lang="xx")
    assert xx_en["src"] == ["[CLS]", *XX, "[SEP]", "[PAD]"] and xx_en["tgt"] == ["[CLS]", *EN, "[SEP]"]
    assert (xx_en["src_lang"], xx_en["tgt_lang"]) == ("xx", "en")
    assert xx_en["align_index"] == [0, 1, 3, 2, 5, 4, 6]  # this permutation is its own inverse
    for i, j in GOLD:
        assert xx_en["src"][xx_en["align_index"][i + 1]] == XX[j]
    # The reverse record reads the reverse link set, the forward record the forward one.
    en_xx2, xx_en2 = cdlm_records_for_pair(EN, XX, forward=GOLD, reverse=[(0, 0)], xx_lang="xx")
    assert en_xx2 == en_xx
    assert xx_en2["align_index"] == [0, 1, 7, 7, 7, 7, 6]


@pytest.mark.parametrize("order", [[(1, 2), (3, 2)], [(3, 2), (1, 2)]])
def test_property_7_with_two_links_on_one_output_the_larger_input_index_wins(order):
    record = build_cdlm_record(EN, XX, order, src_lang="en", tgt_lang="xx")
    assert record["align_index"][2 + 1] == 3 + 1


def test_record_builder_refuses_links_outside_the_pair():
    with pytest.raises(XbenchError, match=r"\(5, 0\).*5 input and 5 output"):
        build_cdlm_record(EN, XX, [(5, 0)], src_lang="en", tgt_lang="xx")


def test_records_round_trip_through_jsonl_and_bad_lines_are_named(tmp_path):
    records = list(cdlm_records_for_pair(EN, XX, GOLD, GOLD, xx_lang="xx"))
    path = tmp_path / "cdlm.jsonl"
    assert write_cdlm_jsonl(path, records) == 2
    assert read_cdlm_jsonl(path) == records
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert list(first) == ["src", "src_lang", "tgt", "tgt_lang", "align_index"]
    bad = dict(records[0], align_index=[0, 1, 2])
    path.write_text(json.dumps(records[0]) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="line 2.*align_index"):
        read_cdlm_jsonl(path)


# ------------------------------------------------------------------ features and collation

def toy_examples(n_pairs: int = 6, seed: int = 0) -> tuple[ToyTokenizer, list[CdlmFeatures]]:
    """en→xx and xx→en records of pairs of varying length, encoded, each with its MLM example."""
    gen = torch.Generator().manual_seed(seed)
    words = [f"w{i}" for i in range(40)]
    tok = ToyTokenizer(words + EN + XX + XX_PARTICLE)
    feats = []
    for p in range(n_pairs):
        n_en = 3 + int(torch.randint(0, 6, (1,), generator=gen))
        n_xx = 2 + int(torch.randint(0, 8, (1,), generator=gen))
        en = [words[int(k)] for k in torch.randint(0, 40, (n_en,), generator=gen)]
        xx = [words[int(k)] for k in torch.randint(0, 40, (n_xx,), generator=gen)]
        links = [(i, i) for i in range(min(n_en, n_xx)) if i % 3 != 1]
        for record in cdlm_records_for_pair(en, xx, links, links, xx_lang="xx"):
            feats.append(encode_cdlm_record(record, tok, LANGS))
    return tok, stage_f_examples(feats, pad_id=PAD)


def test_mlm_example_is_the_xx_side_with_identity_order():
    tok = ToyTokenizer(EN + XX)
    en_xx, xx_en = (encode_cdlm_record(r, tok, LANGS) for r in cdlm_records_for_pair(EN, XX, GOLD, GOLD, xx_lang="xx"))
    for features, xx_ids in ((en_xx, en_xx.tgt_ids), (xx_en, xx_en.src_ids[:-1])):
        mlm = xx_mlm_example(features, PAD)
        assert mlm.is_mlm and mlm.tgt_ids == xx_ids and mlm.src_ids == (*xx_ids, PAD)
        assert mlm.align_index == tuple(range(len(xx_ids))) and (mlm.src_lang, mlm.tgt_lang) == (1, 1)
    with pytest.raises(XbenchError, match="unknown|not one of"):
        encode_cdlm_record(dict(build_cdlm_record(EN, XX, GOLD, src_lang="en", tgt_lang="fr")), tok, LANGS)


@pytest.mark.parametrize("quirks", [False, True])
def test_property_6_cdlm_labels_are_minus_100_exactly_at_padded_output_positions(quirks):
    tok, examples = toy_examples()
    batch = CdlmCollator.for_tokenizer(tok, reference_quirks=quirks)(examples, torch.Generator().manual_seed(0))
    labels = batch["labels"]
    t_out = labels.size(1)
    if quirks:  # one common length for both sides
        assert t_out == batch["input_ids"].size(1) == max(len(e.src_ids) for e in examples)
    else:
        assert t_out == max(len(e.tgt_ids) for e in examples)
    cdlm_rows = [r for r, e in enumerate(examples) if not e.is_mlm]
    assert cdlm_rows and not batch["is_mlm"][cdlm_rows].any()
    for r in cdlm_rows:
        n = len(examples[r].tgt_ids)
        padded = torch.arange(t_out) >= n
        assert torch.equal(labels[r] == -100, padded), r
        assert labels[r, :n].tolist() == list(examples[r].tgt_ids)


def test_property_6_paired_mlm_example_labels_15_percent_of_non_special_positions():
    gen = torch.Generator().manual_seed(1)
    words = [f"w{i}" for i in range(200)]
    tok = ToyTokenizer(words)
    examples = []
    for _ in range(40):
        n = 45 + int(torch.randint(0, 30, (1,), generator=gen))
        xx = [words[int(k)] for k in torch.randint(0, 200, (n,), generator=gen)]
        record = build_cdlm_record(EN, xx, [], src_lang="en", tgt_lang="xx")
        examples.append(xx_mlm_example(encode_cdlm_record(record, tok, LANGS), PAD))
    batch = CdlmCollator.for_tokenizer(tok)(examples, torch.Generator().manual_seed(2))
    content = torch.zeros_like(batch["labels"], dtype=torch.bool)
    for r, e in enumerate(examples):
        content[r, 1: len(e.tgt_ids) - 1] = True  # everything but [CLS], [SEP] and the padding
    assert int(content.sum()) >= 2000
    labelled = batch["labels"] != -100
    assert not (labelled & ~content).any()  # specials and padding are never selected
    share = float(labelled.sum()) / float(content.sum())
    assert 0.12 <= share <= 0.18, share
    originals = torch.full_like(batch["labels"], PAD)
    for r, e in enumerate(examples):
        originals[r, : len(e.tgt_ids)] = torch.tensor(e.tgt_ids)
    assert torch.equal(batch["labels"][labelled], originals[labelled])
    t = batch["labels"].size(1)
    masked = batch["input_ids"][:, :t][labelled] == MASK
    assert 0.7 <= float(masked.float().mean()) <= 0.9  # 80 % [MASK] among the selected
    # The same generator state masks the same positions (a resumed run masks alike).
    again = CdlmCollator.for_tokenizer(tok)(examples, torch.Generator().manual_seed(2))
    assert torch.equal(again["input_ids"], batch["input_ids"]) and torch.equal(again["labels"], batch["labels"])


def test_property_6_ordering_mask_zero_exactly_at_padding_and_all_ones_with_quirks():
    tok, examples = toy_examples()
    plain = CdlmCollator.for_tokenizer(tok)(examples, torch.Generator().manual_seed(0))
    order_mask = plain["ordering_attention_mask"]
    t_out = order_mask.size(1)
    for r, e in enumerate(examples):
        assert torch.equal(order_mask[r] == 0, torch.arange(t_out) >= len(e.tgt_ids)), r
        # Padded output positions gather the null slot, which is never an attention key.
        null_slot = len(e.src_ids) - 1
        assert (plain["ordering_alignment"][r, len(e.tgt_ids):] == null_slot).all()
        assert plain["attention_mask"][r].tolist() == [1] * null_slot + [0] * (plain["input_ids"].size(1) - null_slot)
    quirky = CdlmCollator.for_tokenizer(tok, reference_quirks=True)(examples, torch.Generator().manual_seed(0))
    assert (quirky["ordering_attention_mask"] == 1).all()
    assert quirky["input_ids"].shape == quirky["labels"].shape  # one common length
    for r, e in enumerate(examples):
        if e.is_mlm:  # the reference's identity alignment over the whole length
            assert torch.equal(quirky["ordering_alignment"][r], torch.arange(quirky["labels"].size(1)))


def test_collator_pads_to_a_fixed_length_on_request():
    tok, examples = toy_examples()
    batch = CdlmCollator.for_tokenizer(tok, reference_quirks=True, pad_to=32)(examples, torch.Generator())
    assert batch["input_ids"].shape == batch["labels"].shape == (len(examples), 32)
    with pytest.raises(XbenchError, match="pad_to=4"):
        CdlmCollator.for_tokenizer(tok, pad_to=4)(examples, torch.Generator())


def test_stage_f_loss_reductions():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 7, generator=gen)
    labels = torch.tensor([[1, 2, 3, -100], [4, -100, -100, -100], [-100, 5, -100, 6]])
    is_mlm = torch.tensor([False, True, True])
    per_token = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), ignore_index=-100,
                                                  reduction="none").view(3, 4)
    reference = stage_f_loss(logits, labels, is_mlm)
    assert reference.keys() == {"stage_f"}
    torch.testing.assert_close(reference["stage_f"], per_token[labels != -100].mean())
    split = stage_f_loss(logits, labels, is_mlm, "per_objective")
    torch.testing.assert_close(split["cdlm"], per_token[0, :3].mean())
    torch.testing.assert_close(split["mlm"], per_token[1:][labels[1:] != -100].mean())
    with pytest.raises(XbenchError, match="stage_f_reduction"):
        stage_f_loss(logits, labels, is_mlm, "sum")


@pytest.mark.parametrize("quirks", [False, True])
def test_collated_batch_trains_the_trelm_model(quirks):
    from transformers import BertConfig, BertForMaskedLM

    from xbench.models.trelm import create_trelm

    tok, examples = toy_examples()
    torch.manual_seed(0)
    source = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    model = create_trelm(source, reference_quirks=quirks)
    batch = CdlmCollator.for_tokenizer(tok, reference_quirks=quirks)(examples, torch.Generator().manual_seed(0))
    assert set(batch) == {*MODEL_INPUT_KEYS, "labels", "is_mlm"}
    inputs = {k: batch[k] for k in MODEL_INPUT_KEYS}
    out = model(**inputs)
    assert out.logits.shape[:2] == batch["labels"].shape
    loss = sum(stage_f_loss(out.logits, batch["labels"], batch["is_mlm"], "per_objective").values())
    assert torch.isfinite(loss)
    loss.backward()
    assert model.tri_layer.attention.self.query.weight.grad.abs().sum() > 0
