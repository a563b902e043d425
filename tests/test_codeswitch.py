"""Code-switched fine-tuning data (xbench/data/codeswitch.py): spec property 8 of docs/methods/ppa.md,
on the real XNLI German dev-train part and its English original."""
from __future__ import annotations

import pytest

from xbench.data.codeswitch import code_switch_pairs, code_switch_questions
from xbench.data.pair_tsv import PairExample
from xbench.data.squad import QAExample
from xbench.errors import XbenchError


def _xnli(data_root, lang: str, n: int = 300) -> list[PairExample]:
    labels = {"entailment": 0, "neutral": 1, "contradiction": 2}
    rows = (data_root / "xnli" / "dev" / f"{lang}.tsv").read_text(encoding="utf-8").splitlines()[:n]
    return [PairExample(p, h, labels[y]) for p, h, y in (r.split("\t") for r in rows)]


def test_code_switching_is_a_no_op_at_zero_and_switches_exactly_one_text_at_one(data_root) -> None:
    de, en = _xnli(data_root, "de"), _xnli(data_root, "en")
    assert code_switch_pairs(de, en, 0.0, seed=1) == de
    switched = code_switch_pairs(de, en, 1.0, seed=1)
    for ex, d, e in zip(switched, de, en):
        assert ex.label == d.label
        assert (ex.premise, ex.hypothesis) in ((e.premise, d.hypothesis), (d.premise, e.hypothesis))  # one English text
    share = sum(ex.premise == e.premise for ex, e in zip(switched, en)) / len(en)
    assert 0.4 < share < 0.6  # premise or hypothesis, chosen uniformly
    half = code_switch_pairs(de, en, 0.5, seed=1)
    assert half == code_switch_pairs(de, en, 0.5, seed=1) and half != code_switch_pairs(de, en, 0.5, seed=2)
    assert 0.4 < sum(ex != d for ex, d in zip(half, de)) / len(de) < 0.6


def test_code_switching_refuses_originals_that_are_not_line_aligned(data_root) -> None:
    de, en = _xnli(data_root, "de"), _xnli(data_root, "en")
    with pytest.raises(XbenchError, match="300 target examples but 299 English ones"):
        code_switch_pairs(de, en[:299], 0.5, seed=1)
    with pytest.raises(XbenchError, match="not line-aligned"):
        code_switch_pairs(de, en[1:] + en[:1], 0.5, seed=1)  # shifted by one line: labels disagree somewhere


def test_qa_code_switching_changes_only_the_question() -> None:
    de = [QAExample(str(i), f"Frage {i}?", f"Kontext {i} mit Antwort {i}.", (f"Antwort {i}",), (13,)) for i in range(50)]
    en = [QAExample(str(i), f"Question {i}?", f"Context {i} with answer {i}.", (f"answer {i}",), (14,)) for i in range(50)]
    switched = code_switch_questions(de, en, 1.0, seed=0)
    assert [ex.question for ex in switched] == [e.question for e in en]
    assert [(ex.context, ex.answers, ex.answer_starts) for ex in switched] == [(d.context, d.answers, d.answer_starts) for d in de]
    assert code_switch_questions(de, en, 0.0, seed=0) == de
