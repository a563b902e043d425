"""Content-addressed cache for built artefacts (tiny source models, encoders, tokenised data).

An entry's key is the SHA-256 of the canonical JSON of everything that determines it (config,
code version, data hashes). Entries are built in a work directory that survives a kill (so a
build can resume), then moved into place atomically; a lock file stops two processes from
building the same key.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from xbench.atomic import atomic_dir, atomic_write_json, creator_alive, hash_json, owner_tag, remove_path


def cache_root() -> Path:
    return Path(os.environ.get("XBENCH_CACHE", Path.home() / ".cache" / "xbench")).expanduser()


@contextlib.contextmanager
def _locked(path: Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """The flock of `path` (exact between the processes of one machine) and its lease (xbench/locks.py),
    which keeps two machines apart where a network filesystem does not share flocks."""
    from xbench.locks import lease

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            with lease(path, waiting=(lambda _holder: waiting()) if waiting is not None else None):
                yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _world() -> tuple[int, int]:
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def entry_path(kind: str, key: dict[str, Any]) -> Path:
    return cache_root() / kind / hash_json(key)[:16]


def get_or_build(kind: str, key: dict[str, Any], build: Callable[[Path, Path], dict[str, Any] | None]) -> Path:
    """Return the entry for `key`, building it with build(out_dir, work_dir) if absent.

    `build` writes the artefact into out_dir and may keep resumable state in work_dir, which
    persists across interrupted attempts and is deleted after success. Its return value is
    stored as the entry's manifest.
    """
    return get_or_build_status(kind, key, build)[0]


def get_or_build_status(kind: str, key: dict[str, Any], build: Callable[[Path, Path], dict[str, Any] | None],
                        waiting: Callable[[Path], None] | None = None) -> tuple[Path, bool]:
    """`get_or_build`, plus whether this call built the entry (False: it was reused).

    Only this can tell: an entry absent before the call may have been finished by another
    process while this one waited on the lock, and then it was reused, not built. `waiting(path)`
    is called when another process holds the entry's lock, before this one blocks on it, so that
    a wait of minutes is said rather than silent.
    """
    path = entry_path(kind, key)
    if (path / "entry.json").is_file():
        return path, False
    world, rank = _world()
    if world > 1:
        # Under torchrun a build trains with DDP, so every rank must run it (a lock would deadlock
        # the collectives); rank 0 publishes the entry, the others drop their copies.
        return _build_distributed(kind, key, build, path, rank), True
    lock = path.with_name(path.name + ".lock")
    if waiting is not None and lock.exists():
        with open(lock) as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(probe, fcntl.LOCK_UN)
            except BlockingIOError:
                waiting(path)
    with _locked(lock, waiting=(lambda: waiting(path)) if waiting is not None else None):
        if (path / "entry.json").is_file():  # built by another process while we waited
            return path, False
        work = path.with_name(path.name + ".work")
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with atomic_dir(path) as tmp:
            manifest = build(tmp, work) or {}
            atomic_write_json(tmp / "entry.json", {"kind": kind, "key": key, "key_hash": hash_json(key),
                                                   "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                   "build_seconds": round(time.time() - t0, 3),
                                                   "manifest": manifest})
        shutil.rmtree(work, ignore_errors=True)
    return path, True


def _build_distributed(kind: str, key: dict[str, Any], build: Callable[[Path, Path], dict[str, Any] | None],
                       path: Path, rank: int) -> Path:
    import tempfile

    work = path.with_name(path.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    out = Path(tempfile.mkdtemp(prefix=f".{path.name}.rank{rank}.{owner_tag()}.", suffix=".tmp", dir=path.parent))
    try:
        manifest = build(out, work) or {}
        if rank == 0:
            atomic_write_json(out / "entry.json", {"kind": kind, "key": key, "key_hash": hash_json(key),
                                                   "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                   "build_seconds": round(time.time() - t0, 3), "manifest": manifest})
            os.replace(out, path)
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if rank != 0 or out.exists():
            shutil.rmtree(out, ignore_errors=True)
    _barrier()
    return path


def read_entry(path: Path) -> dict[str, Any]:
    return json.loads((path / "entry.json").read_text())


def list_entries() -> list[dict[str, Any]]:
    root = cache_root()
    rows = []
    for entry in sorted(root.glob("*/*/entry.json")):
        meta = json.loads(entry.read_text())
        size = sum(p.stat().st_size for p in entry.parent.rglob("*") if p.is_file())
        rows.append({"kind": meta["kind"], "id": entry.parent.name, "path": str(entry.parent),
                     "built_at": meta.get("built_at"), "bytes": size, "key": meta.get("key")})
    return rows


def remove_entries(kind: str | None = None, entry_id: str | None = None) -> int:
    n = 0
    for row in list_entries():
        if (kind is None or row["kind"] == kind) and (entry_id is None or row["id"].startswith(entry_id)):
            shutil.rmtree(row["path"], ignore_errors=True)
            n += 1
    return n


# ------------------------------------------------------------------ everything else in the cache
FEATURES = "features"


def lock_held(lock: Path) -> bool:
    """Whether some process (this one included) holds `lock` now: a live lease (another machine's too), or
    a non-blocking flock attempt that fails."""
    from xbench.locks import holder

    if holder(lock) is not None:
        return True
    if not lock.is_file():
        return False
    try:
        f = open(lock, "a")
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _entry_id(name: str) -> str:
    """The entry a side item belongs to: '<id>.work', '<id>.lock', '.<id>.<...>.tmp' -> '<id>'."""
    return name.lstrip(".").split(".")[0]


def cache_items() -> list[dict[str, Any]]:
    """Everything under the cache root, each with a `status`:

    ready        a built entry (or, for kind `features`, the feature cache: one row, its files and size)
    half-built   `<id>.work` of an interrupted build, which a new build of that key resumes
    building     a work folder, temporary, lock or lease in use by a live process, on this machine or,
                 for a lease, another one sharing the cache (never removed)
    stale        a temporary left by a killed process (atomic_dir, a distributed build, an
                 interrupted feature write), or a lock file nobody holds
    """
    root = cache_root()
    rows: list[dict[str, Any]] = []
    if not root.is_dir():
        return rows
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        kind = kind_dir.name
        if kind == FEATURES:
            files = [p for p in kind_dir.iterdir() if not p.name.startswith(".")]
            if files:
                rows.append({"kind": kind, "id": f"{len(files)} files", "status": "ready", "path": str(kind_dir),
                             "bytes": sum(_size(p) for p in files), "built_at": None})
            for p in sorted(kind_dir.glob(".*")):
                alive = creator_alive(p)
                rows.append({"kind": kind, "id": p.name, "status": "building" if alive is not False else "stale",
                             "path": str(p), "bytes": _size(p), "built_at": None})
            continue
        for p in sorted(kind_dir.iterdir()):
            name = p.name
            busy = lock_held(kind_dir / f"{_entry_id(name)}.lock")
            row = {"kind": kind, "id": name, "path": str(p), "bytes": 0, "built_at": None}
            if name.startswith("."):
                row["status"] = "building" if busy or creator_alive(p) else "stale"
            elif name.endswith((".lock", ".lock.lease")):  # a lease: the lock of a build on any machine
                row["status"] = "building" if busy else "stale"
            elif name.endswith(".work"):
                row["status"] = "building" if busy else "half-built"
            elif (p / "entry.json").is_file():
                row["status"] = "ready"
                with contextlib.suppress(OSError, ValueError):
                    row["built_at"] = json.loads((p / "entry.json").read_text()).get("built_at")
            else:
                row["status"] = "stale"  # a folder without its entry.json is not an entry
            row["bytes"] = _size(p)
            rows.append(row)
    return rows


def _remove_under_lock(lock: Path, path: Path) -> bool:
    """Remove `path` holding the entry's lock, so that no build can start in between; False when
    a build holds it."""
    if not lock.exists():
        remove_path(path)
        return True
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        remove_path(path)
    return True


def clean_cache(kind: str | None = None, entry_id: str | None = None) -> dict[str, int]:
    """Remove cache items (of one kind, or whose id starts with `entry_id`): built entries, half-built
    work folders, stale temporaries and free locks, and the feature cache. Anything a live process
    is using is left alone. Returns how many items of each status were removed."""
    removed: dict[str, int] = {}
    # Locks last: a lock must not vanish while the work folder it guards is still there.
    for row in sorted(cache_items(), key=lambda r: r["id"].endswith(".lock")):
        if kind is not None and row["kind"] != kind:
            continue
        if entry_id is not None and not _entry_id(row["id"]).startswith(entry_id):
            continue
        if row["status"] == "building":
            continue
        path = Path(row["path"])
        if row["kind"] == FEATURES:
            for p in ([p for p in path.iterdir() if not p.name.startswith(".")] if row["status"] == "ready" else [path]):
                remove_path(p)
        elif not _remove_under_lock(path.parent / f"{_entry_id(path.name)}.lock", path):
            continue
        removed[row["status"]] = removed.get(row["status"], 0) + 1
    return removed
