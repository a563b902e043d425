"""Leases: exclusive lock files that also hold across machines sharing a network filesystem.

The cache and the result paths are locked with `fcntl.flock`, which is exact between the processes
of one machine but which some network filesystems (older NFS, some Lustre and GPFS mounts) do not
share between machines, where a sweep's jobs run. A lease adds a lock file created exclusively
(`O_CREAT | O_EXCL`, atomic on NFSv3+ and the cluster filesystems), naming its holder (host, pid,
start), which the holder touches every `stale_after / 4` seconds while it works. Another process
may take over a lease only when it is stale: its holder on this machine is gone, or, on another
machine, it has not been touched for `stale_after` seconds (the holder died without removing it).
Used together with the flock (xbench/cache.py, xbench/run/record.py): the flock keeps waiting
cheap and exact on one machine, the lease keeps two machines apart.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

STALE_AFTER_S = 600.0  # a holder touches its lease every 150 s; 10 min without a touch is a dead holder


class LeaseHeld(Exception):
    """The lease is held by a live process (non-blocking acquisition)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def _me() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


def _read(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: int, since: float) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a pid reused by a process that started after the lease was taken is not the holder
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK") <= since + 1
    except (OSError, ValueError, IndexError, StopIteration):
        return True


def holder(path: Path, stale_after: float = STALE_AFTER_S) -> dict[str, object] | None:
    """Who holds the lease at `path` (its record), or None when nobody does or the lease is stale."""
    lease = lease_path(path)
    try:
        touched = lease.stat().st_mtime
    except FileNotFoundError:
        return None
    data = _read(lease)
    if data is None:  # being written this instant, or a torn file left by a crash
        return {"host": "?", "pid": "?"} if time.time() - touched < 5 else None
    if data.get("host") == socket.gethostname():
        return data if _pid_alive(int(data.get("pid", 0)), float(data.get("since", 0))) else None
    return data if time.time() - touched < stale_after else None


def lease_path(path: Path) -> Path:
    return path.with_name(path.name + ".lease")


@contextlib.contextmanager
def lease(path: Path, *, blocking: bool = True, stale_after: float = STALE_AFTER_S, poll_s: float = 0.5,
          waiting: Callable[[dict[str, object]], None] | None = None) -> Iterator[None]:
    """Hold the lease of `path` for the block. Blocking: wait while a live holder has it (`waiting` is called
    once with its record); non-blocking: raise LeaseHeld. A stale lease is taken over."""
    lease_file = lease_path(path)
    lease_file.parent.mkdir(parents=True, exist_ok=True)
    told = False
    while True:
        mine = _me()
        try:
            fd = os.open(lease_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            current = holder(path, stale_after)
            if current is None:
                # Stale: remove it, unless another process took it over since we looked.
                seen = _read(lease_file)
                with contextlib.suppress(FileNotFoundError):
                    if _read(lease_file) == seen:
                        lease_file.unlink()
                continue
            if not blocking:
                raise LeaseHeld(f"pid {current.get('pid')} on {current.get('host')}") from None
            if waiting is not None and not told:
                waiting(current)
                told = True
            time.sleep(poll_s)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(mine, f)
        break
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(stale_after / 4):
            if _read(lease_file) != mine:
                return  # taken over (we were judged dead): nothing of ours to refresh
            with contextlib.suppress(OSError):
                os.utime(lease_file)

    beat = threading.Thread(target=heartbeat, name=f"lease {lease_file.name}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=5)
        if _read(lease_file) == mine:
            with contextlib.suppress(FileNotFoundError):
                lease_file.unlink()
