"""XNLI loading: both local layouts, derived splits, label checks, provenance."""
from __future__ import annotations

import pytest

from xbench.data.pair_tsv import check_scorable, load_pair_split, read_official_tsv, read_per_language_tsv
from xbench.errors import DataFormatError, DataNotFoundError, XbenchError
from xbench.cards import get_task


@pytest.fixture(autouse=True)
def _given_roots_only(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # A data_dir adds to XBENCH_DATA; tests that build their own data root must see that root alone.
    if "data_root" not in request.fixturenames:
        monkeypatch.delenv("XBENCH_DATA", raising=False)

LABELS = ["entailment", "neutral", "contradiction"]
PH = {"-", "", "?"}


def _card():
    card = get_task("xnli")
    return card.data, card.params


def test_per_language_layout_errors_name_file_and_line(tmp_path):
    p = tmp_path / "de.tsv"
    p.write_text("a\tb\tneutral\nc\td\n")
    with pytest.raises(DataFormatError, match=r"de.tsv, line 2: found 2 tab-separated columns \(expected 3 columns"):
        read_per_language_tsv(p, LABELS, PH)
    p.write_text("a\tb\tneutral\nc\td\t-\n")
    with pytest.raises(DataFormatError, match=r"line 2: field 'label': label is missing or a placeholder"):
        read_per_language_tsv(p, LABELS, PH)
    p.write_text("a\tb\tmaybe\n")
    with pytest.raises(DataFormatError, match=r"line 1: field 'label': unknown label 'maybe'"):
        read_per_language_tsv(p, LABELS, PH)
    p.write_text("")
    with pytest.raises(DataFormatError, match="de.tsv: file is empty"):
        read_per_language_tsv(p, LABELS, PH)


def test_official_single_file_layout(tmp_path):
    header = "language\tgold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1\tsentence2\tpromptID"
    rows = ["de\tneutral\tx\tx\tEin Satz.\tNoch einer.\t1", "fr\tentailment\tx\tx\tUne phrase.\tUne autre.\t1",
            "de\tcontradiction\tx\tx\tZwei.\tDrei.\t2"]
    p = tmp_path / "xnli.test.tsv"
    p.write_text("\n".join([header, *rows]) + "\n")
    ex = read_official_tsv(p, "de", LABELS, PH)
    assert [(e.premise, e.label) for e in ex] == [("Ein Satz.", 1), ("Zwei.", 2)]
    with pytest.raises(DataFormatError, match="no rows for language 'sw'"):
        read_official_tsv(p, "sw", LABELS, PH)
    # The loader finds the official layout under XNLI-1.0/ in a data root.
    root = tmp_path / "root"
    (root / "XNLI-1.0").mkdir(parents=True)
    (root / "XNLI-1.0" / "xnli.test.tsv").write_text(p.read_text())
    data, params = _card()
    ex2, prov = load_pair_split(data, params, "de", "test", root)
    assert len(ex2) == 2 and prov.files[0]["path"] == "XNLI-1.0/xnli.test.tsv"


def test_one_class_evaluation_data_is_refused(tmp_path):
    p = tmp_path / "de.tsv"
    p.write_text("a\tb\tneutral\nc\td\tneutral\n")
    with pytest.raises(XbenchError, match="every label is 'neutral'"):
        check_scorable(read_per_language_tsv(p, LABELS, PH), LABELS, "xnli de/test")


def test_no_local_data_and_offline_hub_says_how_to_provide_either(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data, params = _card()
    with pytest.raises(DataNotFoundError) as info:
        load_pair_split(data, params, "de", "test", tmp_path)
    msg = str(info.value)
    assert "XBENCH_DATA" in msg and "xnli/test/de.tsv" in msg and "facebook/xnli" in msg and "offline" in msg


def test_real_xnli_splits(data_root):
    data, params = _card()
    test, prov = load_pair_split(data, params, "de", "test", data_root)
    assert len(test) == 5010 and prov.source == "local" and prov.files[0]["path"] == "xnli/test/de.tsv"
    train, tprov = load_pair_split(data, params, "en", "dev-train", data_root)
    held, _ = load_pair_split(data, params, "en", "dev-heldout", data_root)
    assert len(train) == 2241 and len(held) == 249
    assert tprov.selection == {"split": "dev-train", "rows": [0, 2241]}
    # Premise groups stay whole across the cut.
    assert train[-1].premise != held[0].premise
    # The provenance hash changes with the selection, not just the file.
    assert tprov.hash != prov.hash
    with pytest.raises(DataNotFoundError, match="xnli/train/en.tsv"):
        load_pair_split(data, params, "en", "train", data_root)
