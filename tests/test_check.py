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


def test_a_method_floor_widens_that_method_only_and_survives_baseline_update(tmp_path):
    import os
    import subprocess
    import sys

    for method, kind in (("trelm", "transfer"), ("scratch", "baseline")):
        write_result(tmp_path / "ref", method, kind, 1, {"de": 0.40})
        write_result(tmp_path / "now", method, kind, 1, {"de": 0.43})
    ref = make_reference(iter_results(tmp_path / "ref"), floor=0.01, k=2.0, method_floors={"trelm": 0.05})
    status = {r.id.split("/")[3]: r.status for r in compare(ref, iter_results(tmp_path / "now"))}
    assert status == {"trelm": "ok", "scratch": "improved"}
    # --floor changes the default floor, not a method's own
    assert {r.id.split("/")[3]: r.status for r in compare(ref, iter_results(tmp_path / "now"), floor=0.0)} == status

    out = tmp_path / "smoke.json"
    cli = [sys.executable, "-m", "xbench", "baseline", "update", "--output", str(out), "--results-dir", str(tmp_path / "ref")]
    env = {**os.environ, "COLUMNS": "200"}
    assert subprocess.run([*cli, "--method-floor", "trelm=0.05"], env=env, capture_output=True).returncode == 0
    assert subprocess.run(cli, env=env, capture_output=True).returncode == 0  # a plain update keeps the reviewed floor
    assert load_reference(out)["tolerance"]["method_floors"] == {"trelm": 0.05}
    bad = subprocess.run([*cli, "--method-floor", "trelm=lots", "--method-floor", "=0.1"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "trelm=lots" in bad.stderr and "'=0.1'" in bad.stderr


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
    ({"entries": [_entry()], "tolerance": {"method_floors": {"trelm": -1}}}, "field 'tolerance.method_floors.trelm'"),
    ({"entries": [_entry()], "tolerance": {"method_floors": [0.1]}}, "field 'tolerance.method_floors'"),
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
