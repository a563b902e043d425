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
