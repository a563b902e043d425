"""`xbench leaderboard`, `check` and `baseline update` given bad files (issue 9, B.12 and C.17):
one clear message naming the file and field, exit 2 (a regression alone exits 1), no traceback,
nothing written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_results import write_result

REPO = Path(__file__).resolve().parent.parent


def xbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xbench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def _set(path: Path, dotted: str, value) -> None:
    data = json.loads(path.read_text())
    *head, last = dotted.split(".")
    node = data
    for k in head:
        node = node[k]
    node[last] = value
    path.write_text(json.dumps(data))


def _corrupt(kind: str, path: Path) -> str:
    """Make `path` bad in one way; return the fragment the error must show."""
    if kind == "random bytes":
        path.write_bytes(bytes(range(256)) * 4)
        return "not UTF-8"
    if kind == "latin-1":
        path.write_bytes(json.dumps({"schema_version": 3}).encode() + "é".encode("latin-1"))
        return "not UTF-8"
    if kind == "not json":
        path.write_text("{ nope")
        return "not valid JSON"
    fields = {"per_language string": ("scores.per_language.de.accuracy", "0.4", "scores.per_language.de.accuracy"),
              "seed string": ("run.seed", "1", "run.seed"),
              "flops string": ("compute.transfer_total.flops_est", "lots", "compute.transfer_total"),
              "transductive string": ("flags.transductive", "xquad", "flags.transductive"),
              "escaping task name": ("task.name", "../../x/ESCAPED", "task.name")}
    dotted, value, field = fields[kind]
    _set(path, dotted, value)
    return f"field '{field}'"


KINDS = ["random bytes", "latin-1", "not json", "per_language string", "seed string", "flops string",
         "transductive string", "escaping task name"]


# One loader serves all three commands: every kind through `leaderboard`, a few through the others.
CASES = [(kind, "leaderboard") for kind in KINDS] + [(kind, command) for command in ("check", "baseline")
                                                     for kind in ("random bytes", "per_language string", "escaping task name")]


@pytest.mark.parametrize("kind, command", CASES)
def test_malformed_result_file_is_one_clear_error(tmp_path, kind, command):
    good = write_result(tmp_path / "results", "scratch", "baseline", 1, {"de": 0.4})
    ref = tmp_path / "ref.json"
    proc = xbench("baseline", "update", "--output", str(ref), "--results-dir", "results", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    bad = write_result(tmp_path / "results", "clp", "transfer", 1, {"de": 0.5})
    fragment = _corrupt(kind, bad)
    args = {"leaderboard": ["leaderboard", "--results-dir", "results", "--output-dir", "boards"],
            "check": ["check", "--reference", str(ref), "--results-dir", "results"],
            "baseline": ["baseline", "update", "--output", "new.json", "--results-dir", "results"]}[command]
    proc = xbench(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    err = " ".join(proc.stderr.split())  # rich wraps long lines
    assert str(Path("results") / bad.relative_to(tmp_path / "results")) in err and fragment in err
    assert not (tmp_path / "boards").exists() and not (tmp_path / "new.json").exists()
    assert not list(tmp_path.parent.rglob("ESCAPED*"))
    assert good.is_file()


def test_duplicate_seed_is_exit_2_naming_both_files(tmp_path):
    first = write_result(tmp_path / "results", "scratch", "baseline", 1, {"de": 0.4})
    copy = first.with_name("seed-2.json")
    copy.write_text(first.read_text())
    proc = xbench("leaderboard", "--results-dir", "results", "--output-dir", "boards", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = " ".join(proc.stderr.split())
    assert str(first.relative_to(tmp_path)) in err and str(copy.relative_to(tmp_path)) in err


def _ref_and_results(tmp_path: Path, now: float) -> Path:
    write_result(tmp_path / "ref", "scratch", "baseline", 1, {"de": 0.40})
    ref = tmp_path / "ref.json"
    assert xbench("baseline", "update", "--output", str(ref), "--results-dir", "ref", cwd=tmp_path).returncode == 0
    write_result(tmp_path / "results", "scratch", "baseline", 1, {"de": now})
    return ref


def test_check_exit_codes_tell_a_regression_from_a_bad_reference(tmp_path):
    ref = _ref_and_results(tmp_path, now=0.30)
    assert xbench("check", "--reference", str(ref), "--results-dir", "results", cwd=tmp_path).returncode == 1
    data = json.loads(ref.read_text())
    for bad in ({**data, "entries": []}, {**data, "entries": [{**data["entries"][0], "mean": "0.4"}]},
                {**data, "tolerance": None}):
        ref.write_text(json.dumps(bad))
        proc = xbench("check", "--reference", str(ref), "--results-dir", "results", cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and ref.name in proc.stderr


def test_check_passes_within_tolerance(tmp_path):
    ref = _ref_and_results(tmp_path, now=0.405)
    proc = xbench("check", "--reference", str(ref), "--results-dir", "results", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
