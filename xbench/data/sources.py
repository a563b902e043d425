"""Where data comes from: the local data roots (--data-dir, then XBENCH_DATA) first, then the hub.

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
from xbench.loading import hub_offline


@dataclass(frozen=True)
class DataRoots:
    """The local data roots in lookup order: `--data-dir` first, then each folder of XBENCH_DATA.

    `--data-dir` adds to XBENCH_DATA instead of replacing it: a file under `--data-dir` overrides
    the file at the same relative path further down, and every other file is still found. Before,
    a `--data-dir` holding one new treebank silently hid the rest of the data, and with it the
    English text the smoke source model is built from.
    """

    roots: tuple[Path, ...]
    origins: tuple[str, ...]  # where each root came from ("--data-dir", "XBENCH_DATA")

    def find(self, rel: str | Path) -> Path | None:
        """The first root's file at relative path `rel`, or None."""
        for root in self.roots:
            path = root / rel
            if path.is_file():
                return path
        return None

    def ordered(self, rels: list[str]) -> list[tuple[int, Path]]:
        """(index into `rels`, file) of every alternative that exists, root by root: a file under
        --data-dir wins over every alternative below it (say `dev-de.tsv` over XBENCH_DATA's
        `dev-de.tsv.gz`); within one root, the caller's order of preference."""
        return [(i, root / rel) for root in self.roots for i, rel in enumerate(rels) if (root / rel).is_file()]

    def candidates(self, rel: str | Path) -> list[Path]:
        """Where `rel` was looked for, for messages."""
        return [root / rel for root in self.roots]

    def is_dir(self, rel: str | Path) -> bool:
        return any((root / rel).is_dir() for root in self.roots)

    def glob(self, rel_dir: str | Path, pattern: str) -> list[Path]:
        """Files matching `pattern` in `rel_dir` of every root; a name in an earlier root hides the same
        name further down. Sorted by name."""
        found: dict[str, Path] = {}
        for root in self.roots:
            folder = root / rel_dir
            if folder.is_dir():
                for path in folder.glob(pattern):
                    found.setdefault(path.name, path)
        return [found[name] for name in sorted(found)]

    def glob_first(self, rel_dir: str | Path, pattern: str) -> list[Path]:
        """Files matching `pattern` in `rel_dir` of the first root that has any: for files that stand
        for one another under different names (a treebank's `.conllu` and `.conllu.gz`)."""
        for root in self.roots:
            folder = root / rel_dir
            found = sorted(folder.glob(pattern)) if folder.is_dir() else []
            if found:
                return found
        return []

    def root_of(self, path: Path) -> Path | None:
        for root in self.roots:
            if path == root or root in path.parents:
                return root
        return None

    def relative(self, path: Path) -> str:
        root = self.root_of(path)
        return str(path.relative_to(root)) if root is not None else str(path)

    def record(self, path: Path) -> dict[str, str]:
        """A file's provenance record: path relative to its root, the root itself, its SHA-256."""
        root = self.root_of(path)
        return local_file_record(path, root) if root is not None else {"path": str(path), "sha256": file_hash(path)}

    def describe(self) -> str:
        return ", ".join(f"{root} ({origin})" for root, origin in zip(self.roots, self.origins))


def data_roots(data_dir: str | Path | None = None) -> DataRoots | None:
    """`--data-dir` (if given) followed by the folders of XBENCH_DATA (os.pathsep-separated); None if neither."""
    roots: list[Path] = []
    origins: list[str] = []
    given = [(str(data_dir), "--data-dir")] if data_dir else []
    given += [(part, "XBENCH_DATA") for part in os.environ.get("XBENCH_DATA", "").split(os.pathsep) if part]
    for raw, origin in given:
        root = Path(raw).expanduser()
        if not root.is_dir():
            raise DataNotFoundError(f"data directory {root} does not exist (from {origin})")
        root = root.resolve()
        if root not in roots:
            roots.append(root)
            origins.append(origin)
    return DataRoots(tuple(roots), tuple(origins)) if roots else None


def data_root(data_dir: str | Path | None = None) -> Path | None:
    """The first data root only; callers that read files should use `data_roots` and its lookups."""
    roots = data_roots(data_dir)
    return roots.roots[0] if roots else None


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
        return data_hash(self.to_dict())


def local_file_record(path: Path, root: Path) -> dict[str, str]:
    """`path` relative to `root`, the root (where the file was actually found) and the file's SHA-256."""
    try:
        rel = str(path.relative_to(root))
    except ValueError:
        rel = str(path)
    return {"path": rel, "root": str(root), "sha256": file_hash(path)}


def without_roots(record: Any) -> Any:
    """`record` with every file's `root` left out: identities and hashes depend on the files' relative
    paths and contents, not on where a machine keeps its data."""
    if isinstance(record, dict):
        return {k: without_roots(v) for k, v in record.items() if not (k == "root" and "sha256" in record)}
    if isinstance(record, list):
        return [without_roots(v) for v in record]
    return record


def data_hash(record: Any) -> str:
    """The hash of a data record (provenance dicts, file lists), independent of the data roots' location."""
    return hash_json(without_roots(record))


def combined_hash(provenances: list[dict[str, Any]]) -> str:
    return data_hash(provenances)


def no_data_message(what: str, local_hint: str, hub_hint: str | None) -> str:
    lines = [f"no data for {what}."]
    lines.append(f"  local: set XBENCH_DATA (or add --data-dir) to a folder holding {local_hint}")
    if hub_hint:
        state = "offline mode is on (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)" if hub_offline() else "the hub was not reachable"
        lines.append(f"  hub:   {hub_hint} ({state})")
    return "\n".join(lines)
