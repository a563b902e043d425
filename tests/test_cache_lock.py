"""The cache lock (xbench/cache.py get_or_build): two processes that need the same entry build it once.

The processes are real ones (two `xbench run`s sharing a cache is the case that matters). The
first builder is held inside its build until the second process is waiting for the entry, so the
second one cannot finish first or find the entry ready by luck.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xbench import cache

REPO = Path(__file__).resolve().parent.parent

WORKER = r'''
import json, sys, time
from pathlib import Path
from xbench import cache

name, log, release = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])


def build(out, work):
    with open(log, "a") as f:
        f.write(name + "\n")
    (log.parent / f"building-{name}").touch()
    deadline = time.time() + 120
    while not release.exists() and time.time() < deadline:
        time.sleep(0.02)
    (out / "artefact.txt").write_text(name)
    return {"builder": name}


result = cache.get_or_build("lock-test", {"what": "one shared entry"}, build)
path = result[0] if isinstance(result, tuple) else result  # newer versions also say who built it
print(json.dumps({"path": str(path)}))
'''


def _start(tmp_path: Path, name: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), name, str(tmp_path / "builds.log"),
                             str(tmp_path / "release")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _has_open_file_under(pid: int, root: Path) -> bool:
    """Whether process `pid` holds a file under `root` open (Linux /proc): it is at the lock."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd).startswith(str(root)):
                return True
        except OSError:
            continue
    return False


def test_two_concurrent_builders_build_once_and_share_the_entry(tmp_path, monkeypatch):
    (tmp_path / "worker.py").write_text(WORKER)
    root = tmp_path / "cache"
    monkeypatch.setenv("XBENCH_CACHE", str(root))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = _start(tmp_path, "first", env)
    second = None
    try:
        _wait_for(lambda: (tmp_path / "building-first").exists() or first.poll() is not None,
                  "the first process to start building")
        assert first.poll() is None, first.stderr.read()[-2000:]
        second = _start(tmp_path, "second", env)
        # Wait until the second process holds the lock file open (it is waiting on the lock), has
        # started a build of its own, or has exited. Best effort: a lock that keeps no file open
        # while waiting is not seen here, and after 15 s the test goes on (it can then pass without
        # having raced, but never fail because of it).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
                _has_open_file_under(second.pid, root / "lock-test") or (tmp_path / "building-second").exists()
                or second.poll() is not None):
            time.sleep(0.02)
        time.sleep(0.2)
        assert not (tmp_path / "building-second").exists(), "a second build started while the first was running"
    finally:
        (tmp_path / "release").touch()
    out_first, err_first = first.communicate(timeout=120)
    out_second, err_second = second.communicate(timeout=120)
    assert first.returncode == 0, err_first[-2000:]
    assert second.returncode == 0, err_second[-2000:]

    assert (tmp_path / "builds.log").read_text().split() == ["first"]  # built exactly once
    path_first, path_second = (Path(json.loads(o.strip().splitlines()[-1])["path"]) for o in (out_first, out_second))
    assert path_first == path_second == cache.entry_path("lock-test", {"what": "one shared entry"})
    assert (path_second / "artefact.txt").read_text() == "first"
    assert json.loads((path_second / "entry.json").read_text())["manifest"] == {"builder": "first"}


def test_a_failed_build_leaves_no_entry_and_the_next_caller_builds(tmp_path, monkeypatch):
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    key = {"what": "fails once"}

    def broken(out: Path, work: Path) -> dict:
        (out / "half.txt").write_text("partial")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        cache.get_or_build("lock-test", key, broken)
    assert not (cache.entry_path("lock-test", key) / "entry.json").exists()

    calls = []

    def good(out: Path, work: Path) -> dict:
        calls.append(1)
        (out / "artefact.txt").write_text("ok")
        return {}

    result = cache.get_or_build("lock-test", key, good)  # the lock was released by the failure
    path = result[0] if isinstance(result, tuple) else result
    assert calls == [1] and (path / "artefact.txt").read_text() == "ok" and not (path / "half.txt").exists()
    again = cache.get_or_build("lock-test", key, good)
    assert (again[0] if isinstance(again, tuple) else again) == path and calls == [1]
