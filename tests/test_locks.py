"""Leases (xbench/locks.py): exclusive lock files that keep machines apart where a network filesystem does not
share flocks, with stale-lock recovery; and their use by the cache and the result lock."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
import time
from pathlib import Path

import pytest

from xbench.locks import LeaseHeld, holder, lease, lease_path


def _fake(path: Path, host: str, pid: int, age_s: float = 0.0) -> None:
    """A lease as another process (or machine) would have left it, last touched `age_s` ago."""
    f = lease_path(path)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"host": host, "pid": pid, "since": time.time() - age_s - 1}))
    t = time.time() - age_s
    os.utime(f, (t, t))


def _hold(path: str, ready, release) -> None:
    with lease(Path(path)):
        ready.set()
        release.wait(30)


def test_a_lease_is_exclusive_between_processes_and_freed_on_exit(tmp_path):
    target = tmp_path / "entry.lock"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(target), ready, release))
    proc.start()
    assert ready.wait(30)
    with pytest.raises(LeaseHeld, match=f"pid {proc.pid}"):
        with lease(target, blocking=False):
            pass
    release.set()
    proc.join(30)
    assert not lease_path(target).exists() and holder(target) is None
    with lease(target, blocking=False):
        assert holder(target)["pid"] == os.getpid()


def test_stale_leases_are_taken_over_and_live_ones_are_not(tmp_path):
    import socket

    target = tmp_path / "x.lock"
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    _fake(target, socket.gethostname(), dead)
    with lease(target, blocking=False):  # its holder on this machine is gone
        assert holder(target)["pid"] == os.getpid()
    _fake(target, "another-machine", 4242, age_s=5)
    with pytest.raises(LeaseHeld, match="pid 4242 on another-machine"):
        with lease(target, blocking=False, stale_after=60):
            pass
    _fake(target, "another-machine", 4242, age_s=120)  # not touched for longer than stale_after: a dead holder
    with lease(target, blocking=False, stale_after=60):
        assert holder(target, stale_after=60)["pid"] == os.getpid()


def test_the_holder_keeps_its_lease_fresh(tmp_path):
    target = tmp_path / "y.lock"
    with lease(target, stale_after=0.4):
        time.sleep(1.0)
        assert time.time() - lease_path(target).stat().st_mtime < 0.4
        assert holder(target, stale_after=0.4) is not None


def test_the_cache_waits_for_another_machines_build(tmp_path, monkeypatch):
    from xbench import cache

    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    key = {"k": 1}
    lock = cache.entry_path("encoders", key).with_name(cache.entry_path("encoders", key).name + ".lock")
    _fake(lock, "another-machine", 99, age_s=0)
    threading.Timer(1.0, lambda: lease_path(lock).unlink()).start()  # the other machine finishes
    told, builds = [], []

    def build(out: Path, work: Path) -> dict:
        builds.append(1)
        (out / "w").write_text("x")
        return {}

    t0 = time.time()
    path, built = cache.get_or_build_status("encoders", key, build, waiting=lambda p: told.append(p))
    assert built and builds == [1] and time.time() - t0 >= 0.9 and told == [path]
    assert not lease_path(lock).exists()


def test_a_result_being_written_on_another_machine_is_refused(tmp_path):
    from xbench.errors import XbenchError
    from xbench.run.record import result_lock

    out = tmp_path / "res"
    path = out / "xnli" / "zero-shot" / "smoke" / "source" / "m" / "seed-1.json"
    lock = out / ".work" / "locks" / path.relative_to(out).with_suffix(".lock")
    _fake(lock, "another-machine", 77)
    with pytest.raises(XbenchError, match="pid 77 on another-machine"):
        with result_lock(out, path):
            pass
    lease_path(lock).unlink()
    with result_lock(out, path):
        assert holder(lock)["pid"] == os.getpid()
    assert not lease_path(lock).exists()


def test_cache_clean_keeps_a_live_lease_and_removes_a_stale_one(tmp_path, monkeypatch):
    from xbench import cache

    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    live = tmp_path / "cache" / "encoders" / "aaaa.lock"
    gone = tmp_path / "cache" / "encoders" / "bbbb.lock"
    _fake(live, "another-machine", 5, age_s=1)
    _fake(gone, "another-machine", 6, age_s=10_000)
    status = {r["id"]: r["status"] for r in cache.cache_items()}
    assert status["aaaa.lock.lease"] == "building" and status["bbbb.lock.lease"] == "stale"
