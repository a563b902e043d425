"""--resume keeps only a result of the same identity; one run at a time per result path; `reused` is
decided under the cache lock; the final table is whole when piped. Synthetic result files, no training."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from xbench import cache
from xbench.run import orchestrate as pipeline
from xbench.run.record import check_existing
from xbench.run.record import result_lock as _result_lock
from xbench.atomic import sha256_file
from xbench.errors import XbenchError
from xbench.run.record import resume_differences
from xbench.run.request import RunRequest, resolve
from xbench.results.schema import result_path

REPO = Path(__file__).resolve().parent.parent
DATA_REL = "xnli-fake/train.tsv"


def _request(tmp_path: Path, langs: list[str], **kw: Any) -> RunRequest:
    return RunRequest(method="source", task="xnli", langs=langs, output_dir=str(tmp_path / "out"),
                      data_dir=str(tmp_path / "data"), resume=True, **kw)


def _write_result(rr: pipeline.ResolvedRun, seed: int = 1, *, data_sha: str | None = None) -> Path:
    """A result file as `xbench run` writes it for `rr`, down to the data provenance it is checked by."""
    data_file = Path(rr.request.data_dir) / DATA_REL
    data_file.parent.mkdir(parents=True, exist_ok=True)
    if not data_file.exists():
        data_file.write_text("premise\thypothesis\tlabel\nA\tB\tentailment\n")
    langs = list(rr.request.langs)
    result = {
        "schema_version": 2, "xbench_version": rr.config["xbench_version"], "run_id": "r",
        "task": {"name": rr.card.name, "version": rr.card.version, "type": rr.card.task_type, "metric": "accuracy",
                 "data": {"en/dev-train": {"source": "local", "files": [
                     {"path": DATA_REL, "sha256": data_sha or sha256_file(data_file)}]}}},
        "method": {"name": rr.request.method, "kind": "baseline", "params": {}},
        "model": {"name": rr.model},
        "run": {"protocol": rr.protocol, "variant": rr.variant, "profile": rr.profile["name"], "seed": seed,
                "eval_langs": langs},
        "scores": {"metric": "accuracy", "metrics": ["accuracy"], "languages": langs, "average": 0.5,
                   "per_language": {lang: {"accuracy": 0.5, "n": 10} for lang in langs}},
        "compute": {"transfer_total": {"stages": 0, "optimizer_steps": 0, "tokens_seen": 0, "flops_est": 0.0,
                                       "wall_seconds": 0.0}, "wall_seconds_total": 1.0},
        "config": rr.config, "config_hash": rr.config_hash, "environment": {},
    }
    path = result_path(Path(rr.request.output_dir), rr.card.name, rr.protocol, rr.profile["name"], rr.request.method,
                       rr.model, seed, variant=rr.variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return path


def test_same_identity_is_kept(tmp_path):
    rr = resolve(_request(tmp_path, ["de"]))
    assert resume_differences(rr, _write_result(rr)) == []


def test_other_languages_are_named(tmp_path):
    path = _write_result(resolve(_request(tmp_path, ["de"])))
    diffs = resume_differences(resolve(_request(tmp_path, ["zh"])), path)
    assert diffs == [f"{path} was made for languages de, this run asks zh"]


def test_other_settings_name_the_keys(tmp_path):
    path = _write_result(resolve(_request(tmp_path, ["de"], overrides={"finetune.max_steps": "2"})))
    (diff,) = resume_differences(resolve(_request(tmp_path, ["de"])), path)
    assert str(path) in diff and "finetune.max_steps 2 vs 200" in diff


def test_other_code_version_is_named(tmp_path):
    rr = resolve(_request(tmp_path, ["de"]))
    path = _write_result(rr)
    old = json.loads(path.read_text())
    old["config"]["xbench_version"] = "0.0.1"
    path.write_text(json.dumps(old))
    (diff,) = resume_differences(rr, path)
    assert f'xbench_version "0.0.1" vs "{rr.config["xbench_version"]}"' in diff


def test_changed_or_missing_data_is_named(tmp_path):
    rr = resolve(_request(tmp_path, ["de"]))
    path = _write_result(rr)
    data_file = tmp_path / "data" / DATA_REL
    data_file.write_text(data_file.read_text() + "C\tD\tneutral\n")
    (diff,) = resume_differences(rr, path)
    assert f"data file {data_file.resolve()} (en/dev-train) changed since the result was made" in diff
    data_file.unlink()
    (diff,) = resume_differences(rr, path)
    assert f"its data file {DATA_REL} (en/dev-train) is not in the data roots now" in diff


def test_check_existing_refuses_without_flags_and_names_every_difference(tmp_path):
    rr_de = resolve(_request(tmp_path, ["de"], seeds=[1, 2]))
    p1, p2 = _write_result(rr_de, 1), _write_result(rr_de, 2)
    rr_zh = resolve(_request(tmp_path, ["zh"], seeds=[1, 2]))
    with pytest.raises(XbenchError) as info:
        check_existing(rr_zh, {1: p1, 2: p2})
    assert f"{p1} was made for languages de" in str(info.value) and f"{p2} was made for languages de" in str(info.value)
    plain = resolve(_request(tmp_path, ["de"], seeds=[1, 2], ))
    plain.request.resume = False
    with pytest.raises(XbenchError, match="already exist"):
        check_existing(plain, {1: p1, 2: p2})
    plain.request.overwrite = True
    check_existing(plain, {1: p1, 2: p2})  # --overwrite: replaced, no identity needed


def _no_training(*args: Any, **kw: Any) -> None:
    raise AssertionError("training started")


def test_run_resumes_a_matching_result_and_refuses_another(tmp_path, data_root, monkeypatch):
    monkeypatch.setattr(pipeline, "_run_seed", _no_training)
    req = _request(tmp_path, ["de"])
    path = _write_result(resolve(req))
    before = path.read_text()
    assert pipeline.run(req) == [path]
    with pytest.raises(XbenchError, match="was made for languages de, this run asks zh"):
        pipeline.run(_request(tmp_path, ["zh"]))
    assert path.read_text() == before


def test_a_held_lock_refuses_a_second_run_of_the_same_path(tmp_path, data_root, monkeypatch):
    monkeypatch.setattr(pipeline, "_run_seed", _no_training)
    req = _request(tmp_path, ["de"], seeds=[1])
    req.resume = False
    (tmp_path / "data").mkdir()
    rr = resolve(req)
    out = Path(req.output_dir)
    path = result_path(out, rr.card.name, rr.protocol, rr.profile["name"], "source", rr.model, 1)
    with _result_lock(out, path):
        with pytest.raises(XbenchError) as info:
            pipeline.run(req)
    assert f"{path} is being written by another xbench run (pid {os.getpid()} " in str(info.value)
    assert not path.exists()


_HOLDER = """
import sys, time
from pathlib import Path
from xbench.run.record import result_lock as _result_lock
with _result_lock(Path(sys.argv[1]), Path(sys.argv[2])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_lock_of_another_process_is_named_and_released_when_it_dies(tmp_path):
    out = tmp_path / "out"
    path = out / "xnli" / "zero-shot" / "smoke" / "source" / "m" / "seed-1.json"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), str(path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(XbenchError) as info:
            with _result_lock(out, path):
                pass
        assert str(path) in str(info.value) and f"pid {holder.pid} " in str(info.value)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with _result_lock(out, path):  # the kernel dropped the dead holder's lock
        assert (out / ".work" / "locks").is_dir()
    assert not (out / ".work" / "locks").exists()  # released and tidied


def test_cache_reports_reuse_of_an_entry_finished_while_waiting(tmp_path, monkeypatch):
    """`reused` must not be decided before the lock: another builder may finish while we wait on it."""
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    key = {"kind": "test", "n": 1}
    real_locked = cache._locked

    other: list[tuple[Path, bool]] = []

    @contextlib.contextmanager
    def other_builder_finishes_first(lock_path: Path, **kw):
        # A thread plays the other process: it builds the entry while this call waits on the lock.
        if threading.current_thread() is threading.main_thread():
            t = threading.Thread(target=lambda: other.append(
                cache.get_or_build_status("test", key, lambda out, work: {"by": "other"})))
            t.start()
            t.join()
        with real_locked(lock_path, **kw):
            yield

    monkeypatch.setattr(cache, "_locked", other_builder_finishes_first)
    path, built = cache.get_or_build_status("test", key, _no_training)
    assert other == [(path, True)]
    assert not built and cache.read_entry(path)["manifest"] == {"by": "other"}


def test_cache_says_when_it_waits_for_another_builder(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    key = {"n": 3}
    entry = cache.entry_path("test", key)
    lock = entry.with_name(entry.name + ".lock")
    lock.parent.mkdir(parents=True)
    said = threading.Event()
    outcome: list[tuple[Path, bool]] = []
    with open(lock, "w") as held:  # another builder holds the entry's lock
        fcntl.flock(held, fcntl.LOCK_EX)
        t = threading.Thread(target=lambda: outcome.append(cache.get_or_build_status(
            "test", key, lambda out, work: {"x": 1}, waiting=lambda path: said.set())))
        t.start()
        assert said.wait(timeout=60), "the wait was not announced"
        fcntl.flock(held, fcntl.LOCK_UN)
    t.join(timeout=60)
    assert outcome == [(entry, True)]  # that builder gave up without an entry: this one built it
    quiet: list[Path] = []
    cache.get_or_build_status("test", {"n": 4}, lambda out, work: {}, waiting=quiet.append)
    assert quiet == []  # no other holder, nothing said


def test_cache_reports_its_own_build_then_reuse(tmp_path, monkeypatch):
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    first = cache.get_or_build_status("test", {"n": 2}, lambda out, work: {"x": 1})
    second = cache.get_or_build_status("test", {"n": 2}, _no_training)
    assert first[1] is True and second == (first[0], False)


def test_final_table_is_whole_when_piped(tmp_path, capsys, monkeypatch):
    from tests.fixtures_results import write_result
    from xbench import cli

    monkeypatch.delenv("COLUMNS", raising=False)
    langs = ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]
    scores = {lang: 0.5 + i / 100 for i, lang in enumerate(langs)}
    path = write_result(tmp_path, "source", "baseline", 1, scores, task="xquad")
    data = json.loads(path.read_text())
    data["compute"]["wall_seconds_total"] = 1234.0
    path.write_text(json.dumps(data))
    cli._print_run_table(cli._console(), [path])
    out = capsys.readouterr().out
    assert "…" not in out
    row = next(line for line in out.splitlines() if "50.0" in line)
    cells = [c for c in row.replace("│", " ").split() if c]
    assert cells[:14] == ["1", *[f"{100 * scores[lang]:.1f}" for lang in langs], f"{100 * data['scores']['average']:.1f}"]
    header = next(line for line in out.splitlines() if "ar" in line.split())
    assert all(lang in header.split() for lang in langs) and "1234" in row
