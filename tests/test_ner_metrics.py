"""NER scoring (seqeval), IOB2 repair and the PAN-X reader."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from xbench.data.panx import labels_are_scorable, read_panx
from xbench.errors import DataFormatError, XbenchError
from xbench.metrics.ner import repair_iob2, score_ner


def test_hand_computed_scores() -> None:
    gold = [
        ["B-PER", "I-PER", "O", "B-LOC", "O"],
        ["B-ORG", "I-ORG", "I-ORG", "O", "B-PER"],
        ["O", "O", "O"],
    ]
    pred = [
        ["B-PER", "I-PER", "O", "B-ORG", "O"],   # PER right; LOC missed; ORG spurious
        ["B-ORG", "I-ORG", "O", "O", "B-PER"],   # ORG boundary wrong (1 missed + 1 spurious); PER right
        ["O", "I-LOC", "O"],                     # I- after O opens an entity: spurious LOC
    ]
    # gold entities 4, predicted 5, correct 2
    s = score_ner(gold, pred)
    assert s["precision"] == pytest.approx(100 * 2 / 5)
    assert s["recall"] == pytest.approx(100 * 2 / 4)
    assert s["f1"] == pytest.approx(100 * 2 * (2 / 5) * (2 / 4) / (2 / 5 + 2 / 4))
    assert s["n_sentences"] == 3 and s["n_entities"] == 4
    assert all(type(s[k]) is float for k in ("f1", "precision", "recall"))
    assert all(type(s[k]) is int for k in ("n_sentences", "n_entities"))
    json.dumps(s)


def test_default_mode_is_conlleval_compatible() -> None:
    # I-LOC straight after I-PER starts a new LOC entity, I-PER after O starts a PER entity.
    gold = [["B-PER", "I-PER", "B-LOC", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "I-LOC", "O", "I-PER"]]
    assert score_ner(gold, pred)["f1"] == pytest.approx(100.0)
    # Exact boundaries and type are required.
    assert score_ner([["B-PER", "I-PER"]], [["B-PER", "O"]])["f1"] == 0.0
    assert score_ner([["B-PER"]], [["B-ORG"]])["f1"] == 0.0


def test_empty_cases_are_zero_without_warnings(recwarn: pytest.WarningsRecorder) -> None:
    s = score_ner([["O", "O"]], [["O", "O"]])
    assert (s["f1"], s["precision"], s["recall"], s["n_entities"]) == (0.0, 0.0, 0.0, 0)
    assert score_ner([["B-PER"]], [["O"]])["recall"] == 0.0
    assert len(recwarn) == 0


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError):
        score_ner([["O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="sentence 0"):
        score_ner([["O", "O"]], [["O"]])


@pytest.mark.parametrize(
    ("tags", "repaired"),
    [
        ([], []),
        (["O", "B-PER", "I-PER"], ["O", "B-PER", "I-PER"]),
        (["I-PER", "I-PER"], ["B-PER", "I-PER"]),
        (["O", "I-LOC", "I-LOC", "O"], ["O", "B-LOC", "I-LOC", "O"]),
        (["B-PER", "I-LOC"], ["B-PER", "B-LOC"]),
        (["B-ORG", "I-ORG", "I-PER", "I-PER"], ["B-ORG", "I-ORG", "B-PER", "I-PER"]),
        (["B-PER", "B-PER", "I-PER"], ["B-PER", "B-PER", "I-PER"]),
    ],
)
def test_repair_iob2(tags: list[str], repaired: list[str]) -> None:
    assert repair_iob2(tags) == repaired
    assert repair_iob2(repaired) == repaired


def test_repair_rejects_non_iob_tags() -> None:
    for bad in (["PER"], ["X-PER"], ["B-"]):
        with pytest.raises(ValueError):
            repair_iob2(bad)


def test_repair_never_changes_the_score() -> None:
    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(200)]
    pred = [[rng.choice(tags) for _ in g] for g in gold]
    assert score_ner(gold, pred) == score_ner(gold, [repair_iob2(p) for p in pred])
    assert score_ner(gold, gold)["f1"] == pytest.approx(100.0)


# ---- PAN-X reader ----

def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    if name.endswith(".gz"):
        p.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        p.write_text(text, encoding="utf-8")
    return p


GOOD = "Anton\tB-PER\nWilhelm\tI-PER\n.\tO\n\nHamburg\tB-LOC\nliegt\tO\n"


def test_read_small_file(tmp_path: Path) -> None:
    for name in ("a.tsv", "a.tsv.gz"):
        data = read_panx(_write(tmp_path, name, GOOD))
        assert data == [(["Anton", "Wilhelm", "."], ["B-PER", "I-PER", "O"]), (["Hamburg", "liegt"], ["B-LOC", "O"])]
    # extra blank lines between and after sentences are separators, not sentences
    assert len(read_panx(_write(tmp_path, "b.tsv", "\n" + GOOD.replace("\n\n", "\n\n\n") + "\n\n"))) == 2


def test_language_prefix_is_stripped_per_file(tmp_path: Path) -> None:
    prefixed = "".join(f"de:{line}\n" if line else "\n" for line in GOOD.splitlines())
    data = read_panx(_write(tmp_path, "p.tsv", prefixed))
    assert data[0][0] == ["Anton", "Wilhelm", "."]
    # a token that merely looks like a prefix, in a file without prefixes, is kept
    data = read_panx(_write(tmp_path, "q.tsv", "en:\tO\nParis\tB-LOC\n"))
    assert data[0][0] == ["en:", "Paris"]


@pytest.mark.parametrize(
    ("name", "text", "line", "needle"),
    [
        ("notab", "Anton\tB-PER\nWilhelm I-PER\n", 2, "expected token<TAB>tag"),
        ("threecols", "Anton\tB-PER\tx\n", 1, "3 tab-separated fields"),
        ("unknowntag", "Anton\tB-PER\n\nParis\tB-MISC\n", 3, "unknown tag 'B-MISC'"),
        ("lowercase", "Anton\tb-per\n", 1, "unknown tag"),
        ("emptytoken", "Anton\tB-PER\n\tO\n", 2, "empty token"),
        ("notag", "Anton\t\n", 1, "unknown tag ''"),
    ],
)
def test_bad_panx_names_file_and_line(tmp_path: Path, name: str, text: str, line: int, needle: str) -> None:
    p = _write(tmp_path, f"{name}.tsv.gz", text)
    with pytest.raises(DataFormatError) as e:
        read_panx(p)
    assert f"{p}, line {line}:" in str(e.value), str(e.value)
    assert needle in str(e.value)


def test_empty_and_unlabelled_files(tmp_path: Path) -> None:
    for text in ("", "\n\n"):
        with pytest.raises(DataFormatError, match="no sentences"):
            read_panx(_write(tmp_path, "e.tsv", text))
    all_o = _write(tmp_path, "test-de.tsv", "Anton\tO\nWilhelm\tO\n\nHamburg\tO\n")
    with pytest.raises(XbenchError, match="test-de.tsv.*no entity labels"):
        read_panx(all_o)
    data = read_panx(all_o, require_labels=False)
    assert not labels_are_scorable(data)
    assert labels_are_scorable([(["a"], ["B-ORG"])])
    assert not labels_are_scorable([])


def test_real_panx_files(data_root: Path) -> None:
    de = read_panx(data_root / "panx/dev-de.tsv.gz")
    assert len(de) == 10000 and sum(len(t) for t, _ in de) == 97805
    assert de[0] == (["Anton", "Wilhelm", "von", "Zuccalmaglio", "."], ["B-PER", "I-PER", "I-PER", "I-PER", "O"])
    s = score_ner([t for _, t in de], [t for _, t in de])
    assert s["f1"] == 100.0 and s["n_entities"] == 4968 + 4281 + 4569  # B-LOC + B-ORG + B-PER
    en = read_panx(data_root / "panx/train-en.tsv.gz")
    assert len(en) == 20000 and sum(len(t) for t, _ in en) == 160394
    assert all(len(toks) == len(tags) > 0 for toks, tags in en)


def _positions_needing_repair(tags: list[str]) -> list[int]:
    """IOB2 by its definition, written independently of repair_iob2: an I-X must follow B-X or I-X."""
    out, open_type = [], None
    for i, tag in enumerate(tags):
        prefix, _, entity_type = tag.partition("-")
        if prefix == "I" and entity_type != open_type:
            out.append(i)
        open_type = entity_type if prefix in ("B", "I") else None
    return out


def test_real_panx_zh_has_i_after_o(data_root: Path) -> None:
    # Character-split zh keeps "#" (O) for spaces inside entities, so entities resume with I-X.
    zh = read_panx(data_root / "panx/dev-zh.tsv.gz")
    expected_total = 0
    for _, tags in zh:
        repaired = repair_iob2(tags)
        changed = [i for i, (a, b) in enumerate(zip(tags, repaired)) if a != b]
        assert changed == _positions_needing_repair(tags), tags
        assert all(repaired[i] == "B-" + tags[i][2:] for i in changed)
        expected_total += len(changed)
    assert expected_total > 100  # the file does exercise the repair
