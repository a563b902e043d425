"""Atomic file and directory writes, and content hashing.

Every artefact xbench writes (results, predictions, checkpoints, cache entries) goes through
here, so a kill at any moment leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form that config hashes are taken of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def hash_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------ temporary siblings
# Every temporary file or folder is named .<target>.<pid>-<host>.<random>.tmp, so that a later
# process can tell one whose creator was killed (stale, removed) from one being written now.
_TAG = re.compile(r"^(\d+)-([A-Za-z0-9]*)$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24]


def owner_tag() -> str:
    return f"{os.getpid()}-{_host()}"


def temp_owner(name: str) -> tuple[int, str] | None:
    """(pid, host) of the process that made the temporary `name`, None for an untagged one."""
    parts = name.removesuffix(".tmp").rsplit(".", 2)
    m = _TAG.match(parts[1]) if len(parts) == 3 else None
    return (int(m.group(1)), m.group(2)) if m else None


def _process_start(pid: int) -> float | None:
    """Start time (epoch seconds) of `pid` on Linux; None where /proc cannot say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def creator_alive(path: str | Path) -> bool | None:
    """Whether the process that made the temporary `path` still runs: False when it is gone (or
    its pid now belongs to a process started after `path` was written), None when unknown
    (untagged, or made on another host)."""
    path = Path(path)
    owner = temp_owner(path.name)
    if owner is None or owner[1] != _host():
        return None
    pid = owner[0]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = _process_start(pid)
    try:
        written = path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return not (start is not None and start > written + 1)


def remove_path(path: str | Path) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_stale_temps(path: str | Path) -> int:
    """Remove temporaries of `path` left by killed processes; returns how many."""
    path = Path(path)
    n = 0
    with contextlib.suppress(OSError):
        for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            if creator_alive(p) is False:
                remove_path(p)
                n += 1
    return n


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling directory that is renamed to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            if not replace:
                raise FileExistsError(path)
            # Rename the old one aside first so the swap never leaves `path` missing for long.
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# Written last inside an atomically renamed folder: a folder without it was left by an older
# xbench that saved in place, and may hold a truncated file, so it is never reused.
COMPLETE_MARKER = ".xbench-complete"


def save_pretrained_atomic(obj: Any, path: str | Path) -> None:
    """`obj.save_pretrained(path)` (tokenizer or model) that a kill leaves either whole or absent:
    resumable builds reuse such a folder, and a half-written tokenizer.json would be reused."""
    with atomic_dir(path) as tmp:
        obj.save_pretrained(tmp)
        (tmp / COMPLETE_MARKER).write_text("")


def saved_complete(path: str | Path) -> bool:
    """Whether `path` is a folder written whole by save_pretrained_atomic."""
    return (Path(path) / COMPLETE_MARKER).is_file()


def reuse_or_clear(path: str | Path, *, also: tuple[str | Path, ...] = ()) -> bool:
    """True if `path` is a complete saved folder to reuse; otherwise remove it and the folders in
    `also` (state built on top of it, such as a training run that used that tokenizer) and say False."""
    if saved_complete(path):
        return True
    for p in (path, *also):
        shutil.rmtree(p, ignore_errors=True)
    return False
