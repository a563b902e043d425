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

from xbench.atomic import atomic_dir, atomic_write_json, hash_json


def cache_root() -> Path:
    return Path(os.environ.get("XBENCH_CACHE", Path.home() / ".cache" / "xbench")).expanduser()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
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


def get_or_build_status(kind: str, key: dict[str, Any],
                        build: Callable[[Path, Path], dict[str, Any] | None]) -> tuple[Path, bool]:
    """`get_or_build`, plus whether this call built the entry (False: it was reused).

    Only this can tell: an entry absent before the call may have been finished by another
    process while this one waited on the lock, and then it was reused, not built.
    """
    path = entry_path(kind, key)
    if (path / "entry.json").is_file():
        return path, False
    world, rank = _world()
    if world > 1:
        # Under torchrun a build trains with DDP, so every rank must run it (a lock would deadlock
        # the collectives); rank 0 publishes the entry, the others drop their copies.
        return _build_distributed(kind, key, build, path, rank), True
    with _locked(path.with_name(path.name + ".lock")):
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
    out = Path(tempfile.mkdtemp(prefix=f".{path.name}.rank{rank}.", dir=path.parent))
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
