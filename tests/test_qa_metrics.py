"""EM / F1 for extractive QA: MLQA and SQuAD v1.1 normalisation, with hand-computed expectations."""
from __future__ import annotations

import pytest

from xbench.errors import XbenchError
from xbench.metrics.qa import _mixed_segmentation, exact_match, f1, normalize_answer, score_qa, tokens


# --- MLQA normaliser, per language -------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("بالكتاب", "ب كتاب"),  # "ال" inside a word is replaced too (the official regex is unanchored)
        ("الكتاب", "كتاب"),
        ("مال", "م"),  # ... and at the end of a word
        ("القاهرة، مصر", "قاهرة مصر"),  # Arabic comma U+060C is punctuation (Po)
    ],
)
def test_mlqa_arabic(text: str, expected: str) -> None:
    assert normalize_answer(text, "ar", "mlqa") == expected


def test_mlqa_chinese_mixed_segmentation() -> None:
    assert tokens("北京大学 in 2020年", "zh", "mlqa") == ["北", "京", "大", "学", "in", "2020", "年"]
    # 、 ， 。 are punctuation (Po) and are removed before segmentation
    assert normalize_answer("北京、上海，广州。", "zh", "mlqa") == "北 京 上 海 广 州"
    # The official CJK class stops at U+9FA5: Extension A characters stay in the whitespace run.
    assert tokens("㐀㐁 中", "zh", "mlqa") == ["㐀㐁", "中"]


def test_mixed_segmentation_splits_punctuation_and_cjk() -> None:
    assert _mixed_segmentation("ab，cd 中文") == ["ab", "，", "cd", "中", "文"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("der Hund", "hund"),
        ("Derrick", "derrick"),  # "der" is only removed as a whole word
        ("Das Haus des Nikolaus", "haus nikolaus"),
        ("Einer, der kam", "kam"),
        ("Dieser Einstein", "dieser einstein"),
    ],
)
def test_mlqa_german_articles(text: str, expected: str) -> None:
    assert normalize_answer(text, "de", "mlqa") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("La Casa de los Espíritus", "casa de espíritus"),
        ("¿Dónde está el baño?", "dónde está baño"),  # ¿ is Po
        ("Unamuno y unos amigos", "unamuno y amigos"),
        ("Las Vegas", "vegas"),
    ],
)
def test_mlqa_spanish(text: str, expected: str) -> None:
    assert normalize_answer(text, "es", "mlqa") == expected


def test_mlqa_english_vietnamese_hindi() -> None:
    assert normalize_answer("The «Beatles»", "en", "mlqa") == "beatles"  # « » are Pi / Pf
    assert normalize_answer("$100+ — an offer", "en", "mlqa") == "100 offer"  # $ + are S*, — is Pd
    assert normalize_answer("Lịch sử của Việt Nam là", "vi", "mlqa") == "lịch sử việt nam"
    assert normalize_answer("भारत की राजधानी।", "hi", "mlqa") == "भारत की राजधानी"  # danda is Po
    assert normalize_answer("a cat", "hi", "mlqa") == "a cat"  # no articles for Hindi


def test_mlqa_unknown_language_refused() -> None:
    with pytest.raises(XbenchError, match="no rules for language 'ko'"):
        normalize_answer("서울", "ko", "mlqa")


# --- SQuAD v1.1 normaliser -------------------------------------------------------------------

def test_squad_scheme_is_language_blind() -> None:
    assert normalize_answer("The «Beatles»!", "en", "squad") == "«beatles»"  # only ASCII punctuation goes
    assert normalize_answer("der Hund.", "de", "squad") == "der hund"  # no German articles
    assert normalize_answer("بالكتاب", "ar", "squad") == "بالكتاب"
    assert tokens("北京大学 in 2020年", "zh", "squad") == ["北京大学", "in", "2020年"]
    assert normalize_answer("서울", "ko", "squad") == "서울"  # any language is accepted


def test_unknown_scheme_refused() -> None:
    with pytest.raises(XbenchError, match="unknown QA normalisation scheme"):
        normalize_answer("x", "en", "xtreme")


# --- EM / F1 ---------------------------------------------------------------------------------

def test_em_and_f1_take_max_over_golds() -> None:
    golds = ["cat", "cat sat on the red mat"]
    # pred tokens [cat sat on mat]; vs [cat]: P 1/4 R 1 -> 0.4; vs [cat sat on red mat]: P 1 R 4/5 -> 8/9
    assert f1("cat sat on mat", golds, "en", "mlqa") == pytest.approx(8 / 9)
    assert exact_match("cat sat on mat", golds, "en", "mlqa") == 0.0
    assert exact_match("cat sat on mat", golds + ["Cat sat on the mat!"], "en", "mlqa") == 1.0


def test_f1_counts_token_multiplicity() -> None:
    # common = min(2,1) x + min(1,2) y = 2 -> P = R = 2/3
    assert f1("x x y", ["x y y"], "en", "squad") == pytest.approx(2 / 3)
    assert f1("nothing shared", ["other words"], "en", "squad") == 0.0


def test_f1_chinese_depends_on_scheme() -> None:
    # mlqa: 4 character tokens vs 2 -> P 1/2, R 1 -> 2/3; squad: one token each, different -> 0
    assert f1("北京大学", ["北京"], "zh", "mlqa") == pytest.approx(2 / 3)
    assert f1("北京大学", ["北京"], "zh", "squad") == 0.0


def test_score_qa_unanswered_counts_zero() -> None:
    gold = {"q1": ["Paris"], "q2": ["the Eiffel Tower", "Eiffel Tower"], "q3": ["1889"]}
    preds = {"q1": "Paris.", "q2": "Eiffel"}  # q3 unanswered
    # q1: EM 1, F1 1; q2: EM 0, F1 2/3 (P 1, R 1/2); q3: 0, 0
    result = score_qa(preds, gold, "en", "squad")
    assert result["n"] == 3
    assert result["exact_match"] == pytest.approx(100 / 3)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_score_qa_refuses_blank_gold() -> None:
    with pytest.raises(XbenchError, match="no gold answers.*cannot be scored"):
        score_qa({"q1": "x"}, {"q1": [""], "q2": ["  "]}, "en", "squad")
    with pytest.raises(XbenchError, match="1 of 2 gold questions have no non-empty answer"):
        score_qa({}, {"q1": ["a"], "q2": [""]}, "en", "squad")
    with pytest.raises(XbenchError, match="no gold questions"):
        score_qa({}, {}, "en", "squad")


def test_score_qa_refuses_predictions_for_unknown_ids() -> None:
    with pytest.raises(XbenchError, match="not in the gold data"):
        score_qa({"q1": "a", "zz": "b"}, {"q1": ["a"]}, "en", "squad")
