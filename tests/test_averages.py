"""The averages (XLT mean, G-XLT mean, card average): one definition for the result file, the
leaderboard and the check; seeds paired by seed, never by position; a seed counted once."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.fixtures_results import write_result
from xbench.errors import XbenchError
from xbench.results.averages import named_averages, unit_sets
from xbench.results.check import compare, make_reference
from xbench.results.leaderboard import build_tables, render_markdown
from xbench.results.schema import SCHEMA_VERSION, iter_results, load_result


def _row(md: str, name: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith(f"| {name} |"))
    return [c.strip() for c in line.split("|")[1:-1]]


def _header(md: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith("| Method"))
    return [c.strip() for c in line.split("|")[1:-1]]


def _entry(ref: dict, lang: str, method: str = "clp") -> dict:
    return next(e for e in ref["entries"] if e["lang"] == lang and e["method"] == method)


# --------------------------------------------------------------------------- A.1: pairing by seed

def _seed_2_lacks_zh(root):
    write_result(root, "clp", "transfer", 1, {"de": 0.40, "zh": 0.60})
    write_result(root, "clp", "transfer", 2, {"de": 0.45})
    write_result(root, "clp", "transfer", 3, {"de": 0.50, "zh": 0.50})


def test_average_is_over_the_seeds_that_have_every_language(tmp_path):
    _seed_2_lacks_zh(tmp_path)
    md = render_markdown("xnli", build_tables(iter_results(tmp_path), ["de", "zh"]), card_version=1)
    row = _row(md, "clp")
    head = _header(md)
    # Seeds 1 and 3 average 50.0 each; pairing by position would mix seed 2's de with seed 3's zh (48.75).
    assert row[head.index("XLT mean")] == "**50.0 ± 0.0**"
    assert row[head.index("Seeds")] == "1,2,3"
    assert "avg over seeds 1,3 (seed 2 lacks zh)" in row[head.index("Flags")]


def test_reference_records_the_seeds_each_entry_used(tmp_path):
    _seed_2_lacks_zh(tmp_path)
    ref = make_reference(iter_results(tmp_path))
    avg, zh, de = _entry(ref, "avg"), _entry(ref, "zh"), _entry(ref, "de")
    assert (avg["mean"], avg["n_seeds"], avg["seeds"]) == (pytest.approx(0.5), 2, [1, 3])
    assert (zh["n_seeds"], zh["seeds"]) == (2, [1, 3])
    assert (de["n_seeds"], de["seeds"]) == (3, [1, 2, 3])


def test_no_seed_note_when_every_seed_is_complete(tmp_path):
    for seed in (1, 2):
        write_result(tmp_path, "clp", "transfer", seed, {"de": 0.4, "zh": 0.6})
    md = render_markdown("xnli", build_tables(iter_results(tmp_path), ["de", "zh"]), card_version=1)
    assert "avg over seeds" not in md


# --------------------------------------------------------------------------- A.2: one seed counts once

def test_a_copied_result_is_an_error_naming_both_files(tmp_path):
    first = write_result(tmp_path, "clp", "transfer", 1, {"de": 0.40})
    copy = first.with_name("seed-7.json")  # same content, so seed 1 again
    shutil.copy(first, copy)
    results = iter_results(tmp_path)
    for call in (lambda: build_tables(results, ["de"]), lambda: make_reference(results),
                 lambda: compare({"entries": [], "tolerance": {}}, results)):
        with pytest.raises(XbenchError, match="two results for seed 1") as exc:
            call()
        assert str(first) in str(exc.value) and str(copy) in str(exc.value)


def test_the_same_seed_of_different_rows_is_fine(tmp_path):
    write_result(tmp_path, "clp", "transfer", 1, {"de": 0.40})
    write_result(tmp_path, "scratch", "baseline", 1, {"de": 0.30})
    write_result(tmp_path, "clp", "transfer", 1, {"de": 0.20}, variant="treebank=pud")
    assert len(make_reference(iter_results(tmp_path))["entries"]) == 6


# --------------------------------------------------------------------------- A.3: one definition

def test_unit_sets_name_the_three_averages():
    units = ["de", "en", "c=de,q=en", "c=en,q=de"]
    assert unit_sets(units) == {"xlt": ["de", "en"], "gxlt": ["c=de,q=en", "c=en,q=de"],
                                "card": ["c=de,q=en", "c=en,q=de"]}
    assert unit_sets(["de", "zh", "ro"], ["ro"]) == {"xlt": ["de", "zh"], "card": ["de", "zh"]}
    assert unit_sets(["ro"], ["ro"]) == {"xlt": ["ro"], "card": ["ro"]}  # nothing else to average
    values = {"de": 0.5, "en": 0.7, "c=de,q=en": 0.4, "c=en,q=de": 0.3}
    assert named_averages(values, unit_sets(units)) == pytest.approx({"xlt": 0.6, "gxlt": 0.35, "card": 0.35})


def test_gxlt_result_leaderboard_and_check_agree(tmp_path):
    units = {"de": 0.50, "en": 0.70, "c=de,q=en": 0.40, "c=en,q=de": 0.30}
    write_result(tmp_path, "source", "baseline", 1, units, task="mlqa", variant="question_langs=en,de")
    [r] = iter_results(tmp_path)
    assert r["scores"]["averages"] == pytest.approx({"xlt": 0.6, "gxlt": 0.35, "card": 0.35})
    md = render_markdown("mlqa", build_tables([r], ["en", "de"]), card_version=1)
    row, head = _row(md, "source (baseline)"), _header(md)
    assert row[head.index("XLT mean")] == "**60.0**" and row[head.index("G-XLT mean")] == "**35.0**"
    assert "G-XLT mean (off-diagonal): 35.0." in md
    # The check's `avg` is the card average (the G-XLT mean here), not a mean over every unit (47.5).
    assert _entry(make_reference([r]), "avg", "source")["mean"] == pytest.approx(0.35)


def test_check_honours_the_cards_average_excludes(tmp_path):
    write_result(tmp_path / "new", "source", "baseline", 1, {"de": 0.40, "zh": 0.20, "ro": 0.90}, task="xquad",
                 average_excludes=["ro"])
    # A schema-2 file: no average_excludes, but its averaged_over left ro out.
    write_result(tmp_path / "old", "source", "baseline", 1, {"de": 0.40, "zh": 0.20, "ro": 0.90}, task="xquad",
                 schema_version=2, averaged_over=["de", "zh"])
    for sub in ("new", "old"):
        assert _entry(make_reference(iter_results(tmp_path / sub)), "avg", "source")["mean"] == pytest.approx(0.3)


def test_old_result_files_load_upgraded(tmp_path):
    path = write_result(tmp_path, "clp", "transfer", 1, {"de": 0.4, "zh": 0.6}, schema_version=1)
    data = json.loads(path.read_text())
    for key in ("variant", "eval_split"):
        del data["run"][key]
    del data["method"]["kind"]
    path.write_text(json.dumps(data))
    r = load_result(path)
    assert SCHEMA_VERSION == 4
    assert r["scores"]["average_units"] == {"xlt": ["de", "zh"], "card": ["de", "zh"]}
    assert r["scores"]["averages"]["card"] == pytest.approx(0.5)
    assert r["run"]["variant"] == "" and r["run"]["eval_split"] == "test"  # from flags.eval_split
    assert r["method"]["compared_with"] == "scratch" and r["flags"]["warnings"] == []


def test_extractive_qa_averaged_units_use_the_shared_definition():
    from xbench.cards import get_task

    card = get_task("xquad")
    t = card.task_type_impl({})
    units = ["de", "zh", "ro"]
    assert t.averaged_units(units) == unit_sets(units, card.raw["average_excludes"])["card"] == ["de", "zh"]


def test_a_source_model_built_from_other_text_is_another_row(tmp_path):
    # Two smoke runs whose tiny source model learnt from different English text (another --data-dir)
    # are different models: they must neither share a row nor count as two seeds of one.
    import json

    from xbench.results.aggregate import aggregate

    a = write_result(tmp_path / "a", "source", "baseline", 1, {"de": 0.40})
    b = write_result(tmp_path / "b", "source", "baseline", 1, {"de": 0.30})
    for path, text_hash in ((a, "1" * 64), (b, "2" * 64)):
        data = json.loads(path.read_text())
        data["model"]["source_text_hash"] = text_hash
        path.write_text(json.dumps(data))
    rows = aggregate(iter_results(tmp_path / "a") + iter_results(tmp_path / "b"))
    assert sorted(key[4] for key in rows) == ["xbench/tiny-en-bert@11111111", "xbench/tiny-en-bert@22222222"]
