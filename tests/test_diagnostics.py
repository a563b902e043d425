"""Per-language [UNK] rate and majority-prediction share, and when they warn (issue 9, A.10)."""
from __future__ import annotations

from pathlib import Path

import pytest

from xbench.vocab.bpe import train_byte_bpe
from xbench.vocab.wordpiece import train_wordpiece
from xbench.data.pair_tsv import PairExample
from xbench.data.sources import Provenance
from xbench.data.squad import QAExample
from xbench.cards import get_task
from xbench.tasktypes.base import Split
from xbench.tasktypes.diagnostics import majority, unk_rate, warnings_for

LINES = ["the cat sat on the mat", "a dog sat on a log", "the dog and the cat"] * 10


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(LINES, 60)


def _split(lang: str, examples: list) -> Split:
    return Split(lang, "test", examples, Provenance("local"))


def test_unk_rate_counts_real_tokens_only(tokenizer):
    # "the cat ☃ ☃" has 4 real tokens, 2 of them unknown; [CLS], [SEP] and padding are not counted.
    enc = tokenizer("the cat ☃ ☃")
    ids = enc["input_ids"]
    assert ids.count(tokenizer.unk_token_id) == 2 and len(ids) == 6
    padded = {"input_ids": ids + [tokenizer.pad_token_id] * 3, "attention_mask": enc["attention_mask"] + [0] * 3}
    clean = tokenizer("the dog")
    out = unk_rate([padded, dict(clean)], tokenizer)
    assert out == {"unk_rate": pytest.approx(2 / 6), "tokens": 6}
    assert unk_rate([], tokenizer) == {"unk_rate": None, "tokens": 0}


def test_byte_level_tokenizers_have_no_unknown_input():
    tok = train_byte_bpe(LINES, 300)  # <|endoftext|> is bos, eos and unk at once
    feats = [tok("the cat ☃ ပြည်"), {"input_ids": [tok.eos_token_id] + tok("dog")["input_ids"]}]
    assert unk_rate(feats, tok)["unk_rate"] == 0.0


def test_classification_collapse_warns_and_a_balanced_prediction_does_not(tokenizer):
    tt = get_task("xnli").task_type_impl({})
    examples = [PairExample("the cat", "the ☃ dog", i % 3) for i in range(100)]
    split = _split("my", examples)
    feats = [tokenizer(e.premise, e.hypothesis) for e in examples]
    collapsed = tt.diagnostics(split, feats, [0] * 99 + [1], tokenizer)
    assert collapsed["majority_label"] == "entailment" and collapsed["majority_share"] == 0.99
    assert collapsed["classes"] == 3 and collapsed["gold_share"] == 0.34
    assert collapsed["unk_rate"] == pytest.approx(1 / 5)  # the, cat | the, ☃, dog
    warnings = warnings_for("my", collapsed)
    assert len(warnings) == 1 and warnings[0].startswith("my: one class predicted: 99% of the predictions are 'entailment'")
    balanced = tt.diagnostics(split, feats, [i % 3 for i in range(100)], tokenizer)
    assert balanced["majority_share"] == 0.34 and warnings_for("my", balanced) == []


def test_unk_rate_over_a_fifth_warns(tokenizer):
    diag = {"unk_rate": 0.8, "tokens": 100}
    assert warnings_for("my", diag) == ["my: [UNK] rate over 20%: 80% of the input subwords are [UNK]; the tokenizer "
                                        "cannot read this language, so its score is close to chance"]
    assert warnings_for("zh", {"unk_rate": 0.09}) == []


def test_token_labelling_compares_with_the_gold_share():
    tt = get_task("panx").task_type_impl({})
    # Gold: 19 of 20 words O. Predicting all O is 100% O, 5 points above the gold: no warning.
    gold = [(["w"] * 20, ["O"] * 19 + ["B-PER"])]
    split = _split("de", gold)
    preds, golds, classes = tt.predicted_labels(split, [["O"] * 20])
    diag = majority(preds, golds, classes)
    assert diag["majority_share"] == 1.0 and diag["gold_share"] == 0.95 and classes == len(tt.labels)
    assert warnings_for("de", diag) == []
    # Gold half O: all O is a collapse.
    half = _split("de", [(["w"] * 20, ["O"] * 10 + ["B-PER", "I-PER"] * 5)])
    diag = majority(*tt.predicted_labels(half, [["O"] * 20]))
    assert diag["gold_share"] == 0.5 and len(warnings_for("de", diag)) == 1


def test_two_classes_do_not_warn_on_majority():
    assert warnings_for("x", majority(["a"] * 99 + ["b"], ["a", "b"] * 50, 2)) == []
    assert majority(["b", "a", "a", "b"], None, 3)["majority_label"] == "a"  # ties: the smaller label


def test_parsing_counts_relations_per_word(tmp_path: Path):
    from xbench.data.conllu_io import read_conllu

    path = tmp_path / "x-ud-test.conllu"
    path.write_text("# sent_id = 1\n# text = a b c\n1\ta\t_\tX\t_\t_\t2\tnsubj:pass\t_\t_\n"
                    "2\tb\t_\tX\t_\t_\t0\troot\t_\t_\n3\tc\t_\tX\t_\t_\t2\tobj\t_\t_\n\n", encoding="utf-8")
    tt = get_task("ud").task_type_impl({})
    split = _split("en", read_conllu(path))
    preds, golds, classes = tt.predicted_labels(split, [([2, 0, 2], ["nsubj", "root", "nsubj"])])
    assert preds == ["nsubj", "root", "nsubj"] and golds == ["nsubj", "root", "obj"] and classes == len(tt.labels)


def test_qa_records_empty_and_repeated_answers(tokenizer):
    tt = get_task("xquad").task_type_impl({})
    examples = [QAExample(str(i), "q", "the cat sat", ("cat",), (4,)) for i in range(4)]
    feats = [tokenizer("the dog", "the cat sat")]
    diag = tt.diagnostics(_split("en", examples), feats, ["", " ", "", "cat"], tokenizer)
    assert diag["empty_share"] == 0.75 and diag["majority_label"] == "" and diag["kind"] == "qa"
    assert warnings_for("en", diag) == ["en: empty answers: 75% of the predicted answers are empty (over 50%)"]
    same = tt.diagnostics(_split("en", examples), feats, ["cat", "cat", "cat", "sat"], tokenizer)
    assert same["empty_share"] == 0.0 and len(warnings_for("en", same)) == 1
    assert warnings_for("en", tt.diagnostics(_split("en", examples), feats, ["a", "b", "c", "cat"], tokenizer)) == []
