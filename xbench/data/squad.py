"""Reading SQuAD-format extractive QA files (XQuAD, MLQA, TyDiQA-GoldP), plain or gzipped.

Everything is validated up front, so a broken file fails with its path, the JSON path of the bad
field and the question id, instead of producing silently wrong training labels or scores.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from xbench.data.textfiles import read_text
from xbench.errors import DataFormatError, XbenchError

DuplicateIds = Literal["error", "number"]


@dataclass(frozen=True)
class QAExample:
    """One question with its context; ``answers[i]`` starts at character ``answer_starts[i]``."""

    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]
    title: str = ""


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise XbenchError(f"{path}: no such file")
    text = read_text(path)
    if not text.strip():
        raise DataFormatError(path, "file is empty", expected="SQuAD JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno) from e


def _get(obj: Any, key: str, typ: type, path: Path, where: str, qid: str | None = None) -> Any:
    """``obj[key]``, checked to exist and to have type ``typ``."""
    field = f"{where}.{key}" if where else key
    about = f"question '{qid}': " if qid else ""
    if not isinstance(obj, dict):
        raise DataFormatError(path, f"{about}expected an object", field=where or "<top level>")
    if key not in obj:
        raise DataFormatError(path, f"{about}missing", field=field, expected=typ.__name__)
    value = obj[key]
    # bool is a subclass of int, but true/false is never a valid offset.
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise DataFormatError(
            path, f"{about}wrong type {type(value).__name__}", field=field, expected=typ.__name__
        )
    return value


def _read_answers(qa: dict, context: str, qid: str, path: Path, where: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    texts: list[str] = []
    starts: list[int] = []
    for a_i, answer in enumerate(_get(qa, "answers", list, path, where, qid)):
        a_where = f"{where}.answers[{a_i}]"
        text = _get(answer, "text", str, path, a_where, qid)
        start = _get(answer, "answer_start", int, path, a_where, qid)
        found = context[start:start + len(text)] if start >= 0 else None
        if found != text:
            raise DataFormatError(
                path,
                f"question '{qid}': answer {text!r} is not at offset {start} of the context "
                f"(found {found!r})",
                field=f"{a_where}.answer_start",
                expected=f"context[{start}:{start + len(text)}] == text",
            )
        texts.append(text)
        starts.append(start)
    return tuple(texts), tuple(starts)


def _parse(doc: Any, path: Path) -> list[QAExample]:
    examples: list[QAExample] = []
    for d_i, article in enumerate(_get(doc, "data", list, path, "")):
        where = f"data[{d_i}]"
        title = article.get("title", "") if isinstance(article, dict) else ""
        if not isinstance(title, str):
            raise DataFormatError(path, f"wrong type {type(title).__name__}", field=f"{where}.title", expected="str")
        for p_i, para in enumerate(_get(article, "paragraphs", list, path, where)):
            p_where = f"{where}.paragraphs[{p_i}]"
            context = _get(para, "context", str, path, p_where)
            for q_i, qa in enumerate(_get(para, "qas", list, path, p_where)):
                q_where = f"{p_where}.qas[{q_i}]"
                qid = _get(qa, "id", str, path, q_where)
                if not qid:
                    raise DataFormatError(path, "empty question id", field=f"{q_where}.id")
                question = _get(qa, "question", str, path, q_where, qid)
                answers, starts = _read_answers(qa, context, qid, path, q_where)
                examples.append(QAExample(qid, question, context, answers, starts, title))
    if not examples:
        raise DataFormatError(path, "no questions", field="data", expected="at least one question")
    return examples


def _unique_ids(examples: list[QAExample], path: Path, duplicate_ids: DuplicateIds) -> list[QAExample]:
    counts = Counter(ex.id for ex in examples)
    dups = [qid for qid, n in counts.items() if n > 1]
    if not dups:
        return examples
    if duplicate_ids == "error":
        n_questions = sum(counts[qid] for qid in dups)
        raise DataFormatError(
            path,
            f"{len(dups)} question ids are used more than once, by {n_questions} questions "
            f"(first: '{dups[0]}'); pass duplicate_ids='number' to renumber them",
            field="id",
            expected="unique ids",
        )
    # Renumbering keeps a unique id untouched and makes each repeated one "<id>#<k>" (k-th use in
    # file order), so ids stay stable for a given file and predictions can be keyed by them.
    seen: Counter[str] = Counter()
    renamed = []
    for ex in examples:
        if counts[ex.id] > 1:
            seen[ex.id] += 1
            ex = QAExample(f"{ex.id}#{seen[ex.id]}", ex.question, ex.context, ex.answers, ex.answer_starts, ex.title)
        renamed.append(ex)
    clash = len({ex.id for ex in renamed}) != len(renamed)
    if clash:
        raise DataFormatError(path, "renumbered duplicate ids collide with existing ids", field="id")
    return renamed


def _check_answers_present(examples: list[QAExample], path: Path) -> None:
    unanswered = [ex.id for ex in examples if not any(a.strip() for a in ex.answers)]
    if len(unanswered) == len(examples):
        raise XbenchError(
            f"{path}: the gold answers are blanked (no question has a non-empty answer), so this "
            "file cannot be scored or trained on; use it for predictions only"
        )
    if unanswered:
        raise DataFormatError(
            path,
            f"{len(unanswered)} questions have no non-empty answer (first: '{unanswered[0]}')",
            field="answers",
            expected="at least one non-empty answer per question",
        )


def read_squad(path: str | Path, *, require_answers: bool, duplicate_ids: DuplicateIds = "error") -> list[QAExample]:
    """Read and validate a SQuAD-format file (``.json`` or ``.json.gz``).

    ``require_answers``: every question must have a non-empty answer (for training and scoring);
    files whose answers are all blank (the TyDiQA-GoldP dev files as XTREME ships them) are
    refused with an :class:`XbenchError`.

    ``duplicate_ids``: repeated question ids are an error by default. The TyDiQA-GoldP train
    files kept only the last component of each id ("0", "1", ...), so they need ``"number"``,
    which renames the k-th use of a repeated id to ``"<id>#<k>"``.
    """
    if duplicate_ids not in ("error", "number"):
        raise ValueError(f"duplicate_ids must be 'error' or 'number', not {duplicate_ids!r}")
    path = Path(path)
    examples = _unique_ids(_parse(_load_json(path), path), path, duplicate_ids)
    if require_answers:
        _check_answers_present(examples, path)
    return examples
