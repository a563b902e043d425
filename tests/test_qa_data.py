"""Reading SQuAD-format files: malformed input is refused with file, field and question id."""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from xbench.data.squad import QAExample, read_squad
from xbench.errors import DataFormatError, XbenchError
from xbench.metrics.qa import score_qa


def _squad(qas: list[dict[str, Any]], context: str = "Berlin is the capital of Germany.") -> dict[str, Any]:
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


def _qa(qid: str, text: str, start: int) -> dict[str, Any]:
    return {"id": qid, "question": "What?", "answers": [{"text": text, "answer_start": start}]}


def _write(tmp_path: Path, doc: Any, name: str = "f.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def test_reads_plain_and_gzipped(tmp_path: Path) -> None:
    doc = _squad([_qa("q1", "Berlin", 0), _qa("q2", "Germany", 25)])
    expected = [
        QAExample("q1", "What?", "Berlin is the capital of Germany.", ("Berlin",), (0,), "T"),
        QAExample("q2", "What?", "Berlin is the capital of Germany.", ("Germany",), (25,), "T"),
    ]
    assert read_squad(_write(tmp_path, doc), require_answers=True) == expected
    gz = tmp_path / "f.json.gz"
    gz.write_bytes(gzip.compress(json.dumps(doc).encode()))
    assert read_squad(gz, require_answers=True) == expected


def test_answer_offset_mismatch_names_question_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, _squad([_qa("q1", "Berlin", 0), _qa("q-42", "capital", 13)]))
    with pytest.raises(DataFormatError) as err:
        read_squad(path, require_answers=True)
    msg = str(err.value)
    assert str(path) in msg
    assert "q-42" in msg and "'capital'" in msg and "offset 13" in msg
    assert err.value.field == "data[0].paragraphs[0].qas[1].answers[0].answer_start"


def test_answer_start_out_of_range_and_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="q1"):
        read_squad(_write(tmp_path, _squad([_qa("q1", "Berlin", -1)])), require_answers=True)
    bad = _squad([{"id": "q7", "question": "?", "answers": [{"text": "Berlin", "answer_start": "0"}]}])
    with pytest.raises(DataFormatError, match=r"answer_start': question 'q7': wrong type str \(expected int\)"):
        read_squad(_write(tmp_path, bad), require_answers=True)


def test_invalid_json_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"data": [\n  {"paragraphs": [}\n]}', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad\.json, line 2: invalid JSON"):
        read_squad(path, require_answers=False)


@pytest.mark.parametrize("content", [b"", b"  \n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.json"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match="file is empty"):
        read_squad(path, require_answers=False)


def test_broken_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x.json.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match="cannot decompress"):
        read_squad(path, require_answers=False)


def test_missing_file() -> None:
    with pytest.raises(XbenchError, match="no such file"):
        read_squad("/nonexistent/xquad.xx.json", require_answers=False)


def test_missing_structure(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="field 'data': missing"):
        read_squad(_write(tmp_path, {"version": "1.1"}), require_answers=False)
    with pytest.raises(DataFormatError, match=r"field 'data\[0\]\.paragraphs\[0\]\.qas': missing"):
        read_squad(_write(tmp_path, {"data": [{"paragraphs": [{"context": "x"}]}]}), require_answers=False)
    with pytest.raises(DataFormatError, match=r"field 'data\[0\]\.paragraphs\[0\]\.qas\[0\]\.id': missing"):
        read_squad(_write(tmp_path, _squad([{"question": "?", "answers": []}])), require_answers=False)
    with pytest.raises(DataFormatError, match="no questions"):
        read_squad(_write(tmp_path, {"data": []}), require_answers=False)


def test_duplicate_ids_refused_or_numbered(tmp_path: Path) -> None:
    path = _write(tmp_path, _squad([_qa("0", "Berlin", 0), _qa("1", "capital", 14), _qa("0", "Germany", 25)]))
    with pytest.raises(DataFormatError, match="1 question ids are used more than once, by 2 questions"):
        read_squad(path, require_answers=True)
    ids = [ex.id for ex in read_squad(path, require_answers=True, duplicate_ids="number")]
    assert ids == ["0#1", "1", "0#2"]


def test_blanked_answers_refused_only_when_required(tmp_path: Path) -> None:
    path = _write(tmp_path, _squad([_qa("q1", "", 0), _qa("q2", "", 0)]))
    with pytest.raises(XbenchError, match="gold answers are blanked.*cannot be scored"):
        read_squad(path, require_answers=True)
    assert [ex.answers for ex in read_squad(path, require_answers=False)] == [("",), ("",)]


def test_some_unanswered_questions_named(tmp_path: Path) -> None:
    doc = _squad([_qa("q1", "Berlin", 0), {"id": "q2", "question": "?", "answers": []}])
    with pytest.raises(DataFormatError, match="1 questions have no non-empty answer \\(first: 'q2'\\)"):
        read_squad(_write(tmp_path, doc), require_answers=True)


# --- real files ------------------------------------------------------------------------------

def test_real_xquad_de(data_root: Path) -> None:
    examples = read_squad(data_root / "xquad" / "xquad.de.json", require_answers=True)
    assert len(examples) == 1190
    assert len({ex.id for ex in examples}) == 1190
    assert all(ex.context[s:s + len(a)] == a for ex in examples for a, s in zip(ex.answers, ex.answer_starts))


def test_real_mlqa_gz(data_root: Path) -> None:
    examples = read_squad(data_root / "mlqa" / "dev" / "dev-context-de-question-de.json.gz", require_answers=True)
    assert len(examples) == 512
    assert all(len(ex.id) == 40 for ex in examples)


def test_real_tydiqa_ko_train_needs_id_numbering(data_root: Path) -> None:
    path = data_root / "tydiqa_goldp" / "train" / "tydiqa.goldp.ko.train.json"
    # The XTREME per-language files kept only the last part of each id: 1625 questions, 94 ids.
    with pytest.raises(DataFormatError, match="used more than once"):
        read_squad(path, require_answers=True)
    examples = read_squad(path, require_answers=True, duplicate_ids="number")
    assert len(examples) == 1625
    assert len({ex.id for ex in examples}) == 1625


def test_real_tydiqa_dev_without_answers_cannot_be_scored(data_root: Path) -> None:
    path = data_root / "tydiqa_goldp" / "dev_no_answers" / "tydiqa.goldp.sw.dev.json"
    with pytest.raises(XbenchError, match="blanked"):
        read_squad(path, require_answers=True)
    examples = read_squad(path, require_answers=False)
    assert len(examples) == 499
    gold = {ex.id: list(ex.answers) for ex in examples}
    with pytest.raises(XbenchError, match="no gold answers"):
        score_qa({}, gold, "sw", "squad")


def test_real_gold_scores_itself_perfectly(data_root: Path) -> None:
    examples = read_squad(data_root / "mlqa" / "dev" / "dev-context-zh-question-zh.json.gz", require_answers=True)
    gold = {ex.id: list(ex.answers) for ex in examples}
    preds = {ex.id: ex.answers[0] for ex in examples}
    assert score_qa(preds, gold, "zh", "mlqa") == {"exact_match": 100.0, "f1": 100.0, "n": 504}
