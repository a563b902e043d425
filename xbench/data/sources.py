"""Where data comes from: a local data root (XBENCH_DATA or --data-dir) first, then the hub.

Every loader returns a provenance record with it; the result file stores it and the
data hash is taken of it, so a silently changed file changes the hash.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from xbench.atomic import hash_json, sha256_file
from xbench.errors import DataNotFoundError


def data_root(data_dir: str | Path | None = None) -> Path | None:
    raw = str(data_dir) if data_dir else os.environ.get("XBENCH_DATA")
    if not raw:
        return None
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"data directory {root} does not exist (from {'--data-dir' if data_dir else 'XBENCH_DATA'})")
    return root.resolve()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"


@lru_cache(maxsize=4096)
def _file_hash(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def file_hash(path: Path) -> str:
    st = path.stat()
    return _file_hash(str(path), st.st_mtime_ns, st.st_size)


@dataclass
class Provenance:
    """The files (or hub dataset) a split was read from, and any row selection applied."""

    source: str  # "local" or "hub"
    files: list[dict[str, str]] = field(default_factory=list)
    hub: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source}
        if self.files:
            d["files"] = self.files
        if self.hub:
            d["hub"] = self.hub
        if self.selection:
            d["selection"] = self.selection
        return d

    @property
    def hash(self) -> str:
        return hash_json(self.to_dict())


def local_file_record(path: Path, root: Path) -> dict[str, str]:
    try:
        rel = str(path.relative_to(root))
    except ValueError:
        rel = str(path)
    return {"path": rel, "sha256": file_hash(path)}


def combined_hash(provenances: list[dict[str, Any]]) -> str:
    return hash_json(provenances)


def no_data_message(what: str, local_hint: str, hub_hint: str | None) -> str:
    lines = [f"no data for {what}."]
    lines.append(f"  local: set XBENCH_DATA (or --data-dir) to a folder holding {local_hint}")
    if hub_hint:
        state = "offline mode is on (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)" if hub_offline() else "the hub was not reachable"
        lines.append(f"  hub:   {hub_hint} ({state})")
    return "\n".join(lines)
