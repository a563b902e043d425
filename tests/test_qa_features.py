"""QA windowing, labels and span post-processing with a tiny WordPiece tokenizer built here.

Every word of the corpus becomes one token (the vocabulary is large enough; the fixture checks
it), so window arithmetic can be done by hand: with a 2-token question, context word i sits at
position 4 + i - 7w in window w, since windows hold 11 context tokens and overlap by 4.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from xbench.data.squad import QAExample, read_squad
from xbench.errors import XbenchError
from xbench.tasktypes.qa_features import postprocess, prepare_eval_features, prepare_train_features

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu red green blue white").split()
CONTEXT = " ".join(WORDS)  # 30 one-token words
QUESTION = "where is"
MULTIBYTE = "Müller aß Käse in Köln . 北京大学 成立 于 1898 年 。 😀 Straße , ذهب الولد إلى المدرسة"
CORPUS = [
    CONTEXT,
    "where is the old mill north of the river ? the quick brown fox jumps over the lazy dog",
    "Der Hund läuft über die Straße , und frißt Käse in Köln . Müller aß Brötchen mit Äpfeln .",
    "北京大学 成立 于 1898 年 ， 位于 北京 。 上海 是 中国 最大 的 城市 。",
    "Ana vive en España y come jamón ; Él está aquí . café naïve résumé",
    "ذهب الولد إلى المدرسة ، والبنت في البيت .",
] * 8
SMALL = {"max_length": 16, "doc_stride": 4, "max_query_length": 4}
WIDE = {"max_length": 64, "doc_stride": 16, "max_query_length": 8}


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    # The hand arithmetic below needs whole-word tokens; the trainer's ids vary run to run.
    assert fast.tokenize(CONTEXT) == WORDS
    return fast


def _example(answer: str, qid: str = "q", context: str = CONTEXT, question: str = QUESTION) -> QAExample:
    return QAExample(qid, question, context, (answer,), (context.index(answer),))


def _labels(features: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(f["start_positions"], f["end_positions"]) for f in features]


def _tokens(tokenizer: PreTrainedTokenizerFast, feature: dict[str, Any], lo: int, hi: int) -> list[str]:
    return tokenizer.convert_ids_to_tokens(feature["input_ids"][lo:hi + 1])


# --- training windows ------------------------------------------------------------------------

def test_answer_only_in_second_window(tokenizer: PreTrainedTokenizerFast) -> None:
    # windows hold words 0-10, 7-17, 14-24, 21-29; "mike november" = words 12-13
    features, stats = prepare_train_features([_example("mike november")], tokenizer, **SMALL)
    assert stats == {"n_examples": 1, "n_features": 4, "answers_lost_to_truncation": 0}
    assert _labels(features) == [(0, 0), (9, 10), (0, 0), (0, 0)]
    assert _tokens(tokenizer, features[1], 9, 10) == ["mike", "november"]
    assert all(len(f["input_ids"]) == 16 for f in features[:3])
    assert features[1]["token_type_ids"][:4] == [0, 0, 0, 0] and features[1]["token_type_ids"][4] == 1


def test_answer_cut_by_window_boundary_and_lost(tokenizer: PreTrainedTokenizerFast) -> None:
    cut = _example("juliett kilo lima mike", "cut")  # words 9-12: window 0 ends at word 10
    lost = _example("foxtrot golf hotel india juliett kilo lima mike", "lost")  # words 5-12: longer than the overlap
    features, stats = prepare_train_features([cut, lost], tokenizer, **SMALL)
    assert stats == {"n_examples": 2, "n_features": 8, "answers_lost_to_truncation": 1}
    assert _labels(features[:4]) == [(0, 0), (6, 9), (0, 0), (0, 0)]
    assert _labels(features[4:]) == [(0, 0)] * 4


def test_answer_with_leading_space_labels_the_word_only(tokenizer: PreTrainedTokenizerFast) -> None:
    ex = QAExample("q", QUESTION, CONTEXT, (" bravo",), (CONTEXT.index(" bravo"),))
    features, _ = prepare_train_features([ex], tokenizer, **SMALL)
    assert _labels(features)[0] == (5, 5)  # "alpha" (position 4) is not pulled in


def test_long_question_truncated_to_max_query_length(tokenizer: PreTrainedTokenizerFast) -> None:
    ex = _example("zulu", question="  where is the old mill north of the river ?")
    features, _ = prepare_train_features([ex], tokenizer, **SMALL)
    for f in features:
        assert f["token_type_ids"].count(0) == 4 + 2  # CLS + 4 question tokens + SEP
        assert _tokens(tokenizer, f, 1, 4) == ["where", "is", "the", "old"]


def test_training_example_without_answer_refused(tokenizer: PreTrainedTokenizerFast) -> None:
    blank = QAExample("blank-1", QUESTION, CONTEXT, ("",), (0,))
    with pytest.raises(XbenchError, match="'blank-1' has no answer"):
        prepare_train_features([blank], tokenizer, **SMALL)


def test_bad_window_settings_refused(tokenizer: PreTrainedTokenizerFast) -> None:
    # budget = 16 - 4 - 3 = 9 context tokens; a stride of 9 would make tokenizers panic
    with pytest.raises(XbenchError, match="doc_stride=9"):
        prepare_eval_features([_example("zulu")], tokenizer, max_length=16, doc_stride=9, max_query_length=4)
    with pytest.raises(XbenchError, match="fast"):
        prepare_eval_features([_example("zulu")], SimpleNamespace(is_fast=False), **SMALL)


# --- multi-byte text -------------------------------------------------------------------------

def test_multibyte_offsets_round_trip(tokenizer: PreTrainedTokenizerFast) -> None:
    (feature,) = prepare_eval_features([_example("Käse", context=MULTIBYTE)], tokenizer, **WIDE)
    pieces = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    spans = [(p, o) for p, o in zip(pieces, feature["offset_mapping"]) if o is not None]
    assert "".join(MULTIBYTE[s:e] for _, (s, e) in spans) == MULTIBYTE.replace(" ", "")
    for piece, (s, e) in spans:
        assert MULTIBYTE[s:e] == ("😀" if piece == "[UNK]" else piece.removeprefix("##"))


@pytest.mark.parametrize("answer", ["Käse", "Köln", "北京大学", "😀 Straße", "الولد"])
def test_multibyte_labels_map_back_exactly(tokenizer: PreTrainedTokenizerFast, answer: str) -> None:
    ex = _example(answer, context=MULTIBYTE)
    (train,), stats = prepare_train_features([ex], tokenizer, **WIDE)
    (evalf,) = prepare_eval_features([ex], tokenizer, **WIDE)
    assert stats["answers_lost_to_truncation"] == 0
    start, end = train["start_positions"], train["end_positions"]
    offsets = evalf["offset_mapping"]
    assert MULTIBYTE[offsets[start][0]:offsets[end][1]] == answer
    logits = [-5.0] * len(offsets)
    start_logits, end_logits = list(logits), list(logits)
    start_logits[start], end_logits[end] = 5.0, 5.0
    assert postprocess([ex], [evalf], [start_logits], [end_logits]) == {"q": answer}


# --- post-processing -------------------------------------------------------------------------

EvalSetup = tuple[list[QAExample], list[dict[str, Any]], list[list[float]], list[list[float]]]


def _eval_setup(tokenizer: PreTrainedTokenizerFast) -> EvalSetup:
    examples = [_example("zulu")]
    features = prepare_eval_features(examples, tokenizer, **SMALL)
    assert [len(f["input_ids"]) for f in features] == [16, 16, 16, 14]
    start = [[-10.0] * len(f["input_ids"]) for f in features]
    end = [[-10.0] * len(f["input_ids"]) for f in features]
    return examples, features, start, end


def test_eval_features_mark_context_offsets(tokenizer: PreTrainedTokenizerFast) -> None:
    _, features, _, _ = _eval_setup(tokenizer)
    assert [f["example_id"] for f in features] == ["q"] * 4
    first = features[0]["offset_mapping"]
    assert first[:4] == [None, None, None, None] and first[-1] is None
    assert first[4] == (0, 5)  # "alpha"
    assert features[1]["offset_mapping"][4] == (CONTEXT.index("hotel"), CONTEXT.index("hotel") + 5)


def test_postprocess_best_span_across_windows(tokenizer: PreTrainedTokenizerFast) -> None:
    examples, features, start, end = _eval_setup(tokenizer)
    start[0][0] = end[0][0] = 50.0  # CLS and question tokens are never answers
    start[0][1] = 40.0
    start[0][4], end[0][5] = 3.0, 3.0  # window 0: "alpha bravo", score 6
    start[1][9], end[1][10] = 5.0, 4.0  # window 1: "mike november", score 9
    start[2][10], end[2][6] = 8.0, 8.0  # window 2: end before start, invalid; its best valid pair is -2
    assert postprocess(examples, features, start, end) == {"q": "mike november"}
    start[0][4], end[0][5] = 5.0, 5.0  # window 0 now scores 10
    assert postprocess(examples, features, start, end) == {"q": "alpha bravo"}


@pytest.mark.parametrize(
    ("max_answer_length", "expected"),
    [
        (30, "india juliett kilo lima mike november oscar papa"),  # (5, 12): 10 + 10, 8 tokens
        (4, "mike november oscar papa"),  # (9, 12): 6 + 10, 4 tokens
        (3, "mike november"),  # (9, 10): 6 + 6
    ],
)
def test_postprocess_respects_max_answer_length(
    tokenizer: PreTrainedTokenizerFast, max_answer_length: int, expected: str
) -> None:
    examples, features, start, end = _eval_setup(tokenizer)
    start[1][5], end[1][12] = 10.0, 10.0  # words 8 and 15
    start[1][9], end[1][10] = 6.0, 6.0  # words 12 and 13
    assert postprocess(examples, features, start, end, max_answer_length=max_answer_length) == {"q": expected}


@pytest.mark.parametrize("n_best", [1, 2, 20])
def test_postprocess_searches_all_pairs_when_no_n_best_pair_is_valid(
    tokenizer: PreTrainedTokenizerFast, n_best: int
) -> None:
    examples, features, start, end = _eval_setup(tokenizer)
    start[1][12], end[1][6] = 10.0, 10.0  # top-1 pair (12, 6) is invalid
    start[1][5], end[1][9] = 4.0, 3.0
    # valid pairs: (5, 6) = 14 is best; (5, 9) = 7; (12, e >= 12) = 0
    assert postprocess(examples, features, start, end, n_best=n_best) == {"q": "india juliett"}


def test_postprocess_padded_tensor_ignores_positions_past_feature(tokenizer: PreTrainedTokenizerFast) -> None:
    examples, features, start, end = _eval_setup(tokenizer)
    start[3][4], end[3][5] = 2.0, 2.0  # window 3 (words 21-29): "victor whiskey"
    start_t = torch.tensor([row + [100.0] * (16 - len(row)) for row in start])
    end_t = torch.tensor([row + [100.0] * (16 - len(row)) for row in end])
    assert postprocess(examples, features, start_t, end_t) == {"q": "victor whiskey"}


def test_postprocess_several_examples(tokenizer: PreTrainedTokenizerFast) -> None:
    examples = [_example("zulu", "a"), _example("Käse", "b", context=MULTIBYTE)]
    features = prepare_eval_features(examples, tokenizer, **WIDE)
    start = torch.full((len(features), 64), -1.0)
    end = torch.full((len(features), 64), -1.0)
    start[0, 4 + 25] = end[0, 4 + 25] = 3.0  # "zulu" is word 25
    start[1, 4 + 2] = end[1, 4 + 2] = 3.0  # "Käse" is the third token of MULTIBYTE
    assert postprocess(examples, features, start, end) == {"a": "zulu", "b": "Käse"}


# --- real data -------------------------------------------------------------------------------

def test_real_mlqa_labels_cover_answers(tokenizer: PreTrainedTokenizerFast, data_root: Path) -> None:
    examples = read_squad(data_root / "mlqa" / "dev" / "dev-context-zh-question-zh.json.gz", require_answers=True)[:150]
    train, stats = prepare_train_features(examples, tokenizer, max_length=128, doc_stride=32, max_query_length=32)
    evalf = prepare_eval_features(examples, tokenizer, max_length=128, doc_stride=32, max_query_length=32)
    assert stats["n_features"] == len(evalf) > len(examples)
    labelled = 0
    for t, e in zip(train, evalf):
        if t["start_positions"] == 0:
            continue
        ex = next(x for x in examples if x.id == e["example_id"])
        offsets = e["offset_mapping"]
        span = ex.context[offsets[t["start_positions"]][0]:offsets[t["end_positions"]][1]]
        assert ex.answers[0].strip() in span  # token boundaries may widen a span, never cut it
        labelled += 1
    assert labelled >= len(examples) - stats["answers_lost_to_truncation"]
