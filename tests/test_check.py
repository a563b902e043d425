from __future__ import annotations

import json

import pytest

from tests.fixtures_results import write_result
from xbench.errors import DataFormatError
from xbench.results.check import compare, load_reference, make_reference
from xbench.results.schema import iter_results


def _ref(tmp_path, values):
    for seed, v in enumerate(values, start=1):
        write_result(tmp_path / "ref", "scratch", "baseline", seed, {"de": v})
    return make_reference(iter_results(tmp_path / "ref"), floor=0.01, k=2.0)


def test_within_tolerance_passes_and_moved_fails(tmp_path):
    ref = _ref(tmp_path, [0.40, 0.40, 0.40])  # std 0: the floor (1 point) decides
    write_result(tmp_path / "ok", "scratch", "baseline", 1, {"de": 0.405})
    assert {r.status for r in compare(ref, iter_results(tmp_path / "ok"))} == {"ok"}
    write_result(tmp_path / "bad", "scratch", "baseline", 1, {"de": 0.38})
    rows = compare(ref, iter_results(tmp_path / "bad"))
    assert {r.status for r in rows} == {"regressed"}
    assert rows[0].delta == pytest.approx(-0.02)


def test_seed_std_widens_tolerance(tmp_path):
    ref = _ref(tmp_path, [0.30, 0.40, 0.50])  # std 0.1 -> tolerance 0.2
    write_result(tmp_path / "now", "scratch", "baseline", 1, {"de": 0.25})
    assert all(r.status == "ok" for r in compare(ref, iter_results(tmp_path / "now")))


def test_missing_entry_fails(tmp_path):
    ref = _ref(tmp_path, [0.4])
    (tmp_path / "empty").mkdir()
    assert [r.status for r in compare(ref, [])] == ["missing", "missing"]  # de and avg


def test_bad_reference_is_a_clear_error(tmp_path):
    p = tmp_path / "ref.json"
    p.write_text("{not json")
    with pytest.raises(DataFormatError, match="ref.json, line 1: not valid JSON"):
        load_reference(p)
    p.write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(DataFormatError, match="not an xbench reference"):
        load_reference(p)


# --------------------------------------------------------------------------- malformed references (issue 9, C.17)

def _entry(**over):
    e = {"task": "xnli", "protocol": "zero-shot", "profile": "smoke", "method": "scratch", "model": "m",
         "metric": "accuracy", "lang": "de", "mean": 0.4, "std": 0.0}
    return {**e, **over}


@pytest.mark.parametrize("ref, fragment", [
    ({"entries": []}, "field 'entries': the reference has no entries"),
    ({"entries": ["task"]}, "field 'entries[0]': got str"),
    ({"entries": [_entry(mean="0.4")]}, "field 'entries[0].mean': got '0.4'"),
    ({"entries": [_entry(std=float("nan"))]}, "field 'entries[0].std'"),
    ({"entries": [_entry(std=-0.1)]}, "field 'entries[0].std'"),
    ({"entries": [_entry(lang=3)]}, "field 'entries[0].lang'"),
    ({"entries": [_entry(), _entry()]}, "appears twice"),
    ({"entries": [_entry()], "tolerance": [1]}, "field 'tolerance'"),
    ({"entries": [_entry()], "tolerance": {"floor": "x"}}, "field 'tolerance.floor'"),
    ({"entries": {"a": 1}}, "field 'entries'"),
])
def test_malformed_or_empty_reference_is_a_clear_error(tmp_path, ref, fragment):
    p = tmp_path / "ref.json"
    p.write_text(json.dumps({"schema": "xbench-reference/1", **ref}))
    with pytest.raises(DataFormatError) as exc:
        load_reference(p)
    assert str(p) in str(exc.value) and fragment in str(exc.value)


def test_non_utf8_reference_is_a_clear_error(tmp_path):
    p = tmp_path / "ref.json"
    p.write_bytes(b'{"schema": "\xff\xfe"}')
    with pytest.raises(DataFormatError, match="not UTF-8"):
        load_reference(p)
