"""The CLI as a user meets it: one clear message, no traceback, a non-zero exit, no partial file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_results import write_result

REPO = Path(__file__).resolve().parent.parent


def xbench(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    # Generous: a loaded 2-core machine runs the end-to-end calls several times slower than usual.
    return subprocess.run([sys.executable, "-m", "xbench", *args], cwd=cwd or REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def _clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    for f in fragments:
        assert f in proc.stderr, (f, proc.stderr)


def test_run_reports_every_config_problem_at_once(tmp_path):
    proc = xbench("run", "--method", "trelmm", "--task", "xnli", "--langs", "de,xx", "--protocol", "few-shot",
                  "--output-dir", str(tmp_path))
    _clean_error(proc, "3 problems", "unknown method 'trelmm'", "no language(s) xx", "no protocol 'few-shot'")
    assert list(tmp_path.iterdir()) == []


def test_unknown_task_lists_valid_tasks(tmp_path):
    _clean_error(xbench("run", "--method", "source", "--task", "xnly", "--langs", "de", "--output-dir", str(tmp_path)),
                 "unknown task 'xnly'; valid tasks:", "xnli")


def test_existing_result_is_not_overwritten(tmp_path):
    path = write_result(tmp_path, "source", "baseline", 1, {"de": 0.4})
    before = path.read_text()
    proc = xbench("run", "--method", "source", "--task", "xnli", "--langs", "de", "--seeds", "1", "--output-dir", str(tmp_path))
    _clean_error(proc, "already exist", "--overwrite")
    assert path.read_text() == before


def test_leaderboard_on_malformed_result_names_the_file(tmp_path):
    bad = tmp_path / "xnli" / "zero-shot" / "smoke" / "x" / "m" / "seed-1.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema_version": 1,')
    proc = xbench("leaderboard", "--results-dir", str(tmp_path), "--output-dir", str(tmp_path / "lb"))
    _clean_error(proc, "seed-1.json", "not valid JSON")
    assert not (tmp_path / "lb").exists()


def test_check_exit_codes_and_table(tmp_path):
    write_result(tmp_path / "res", "scratch", "baseline", 1, {"de": 0.40})
    ref = tmp_path / "ref.json"
    ok = xbench("baseline", "update", "--results-dir", str(tmp_path / "res"), "--output", str(ref))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ref.read_text())["entries"][0]["mean"] == 0.4
    assert xbench("check", "--reference", str(ref), "--results-dir", str(tmp_path / "res")).returncode == 0
    write_result(tmp_path / "res", "scratch", "baseline", 1, {"de": 0.30})
    bad = xbench("check", "--reference", str(ref), "--results-dir", str(tmp_path / "res"))
    assert bad.returncode == 1 and "regressed" in bad.stdout and "-10.00" in bad.stdout
    _clean_error(xbench("check", "--reference", str(tmp_path / "nope.json")), "nope.json", "reference file not found")


def test_validate_and_list():
    assert xbench("validate").returncode == 0
    out = xbench("list")
    assert out.returncode == 0 and "xnli" in out.stdout and "scratch" in out.stdout and "smoke" in out.stdout


def test_bad_param_syntax(tmp_path):
    _clean_error(xbench("run", "--method", "scratch", "--task", "xnli", "--langs", "de", "--param", "budget",
                        "--output-dir", str(tmp_path)), "--param expects key=value")


def test_hub_model_offline_is_a_clear_error(tmp_path, data_root):
    proc = xbench("run", "--method", "source", "--task", "xnli", "--langs", "de", "--model", "bert-base-cased",
                  "--output-dir", str(tmp_path), env={"HF_HUB_OFFLINE": "1", "XBENCH_DATA": str(data_root)})
    _clean_error(proc, "cannot load 'bert-base-cased'", "--model <local directory>")
    assert not list(tmp_path.glob("**/seed-*.json"))
